"""Scoring one image's maps, and summarising a run's rows.

:func:`score_item` turns an image's raw maps into ``metrics[method][metric]`` (every metric
its boxes / fixations / gaze allow, and the same for the centre and random baselines);
:func:`summarise` and :func:`summarise_per_class` reduce rows to means with bootstrap CIs, one pass
over the rows (they may be streamed from ``rows.jsonl``), 8 bytes a value.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from array import array
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from . import maps as maplib
from .metrics import BINARY_METRICS, BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS, wilson_ci
from .metrics.stats import bootstrap_cis, is_binary
from .metrics.baselines import centre_gaussian, uniform_random
from .metrics.batched import score_maps
from .savers import MapWriter


def _references(ann: Any) -> list[tuple[np.ndarray, dict]]:
    """(reference array, metric table) for each kind of annotation the image has."""
    pairs = ((ann.mask, BOX_METRICS), (ann.fixations, FIXATION_METRICS), (ann.gaze, DENSITY_METRICS))
    return [(refs, table) for refs, table in pairs if refs is not None]


def score(saliency: np.ndarray, ann: Any) -> dict[str, float]:
    """Every metric the image's references allow, on a normalised map ``[H, W]`` (one map at a
    time: :func:`score_all` scores an image's maps together, with the same values)."""
    return {name: float(fn(saliency, refs)) for refs, table in _references(ann) for name, fn in table.items()}


def score_all(maps: np.ndarray, ann: Any, orders: list[np.ndarray | None] | None = None) -> list[dict[str, float]]:
    """:func:`score` of each map of ``maps`` (float32 ``[L, H, W]``) in one call
    (:func:`auditor.metrics.batched.score_maps`); ``orders``: known argsorts of maps (or None)."""
    values = score_maps(maps, mask=ann.mask, fixations=ann.fixations, gaze_map=ann.gaze, orders=orders)
    return [{name: float(v[i]) for name, v in values.items()} for i in range(len(maps))]


def _nan_metrics(ann: Any) -> dict[str, float]:
    return {name: float("nan") for _, table in _references(ann) for name in table}


@functools.lru_cache(maxsize=8)
def _centre(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The centre baseline ``[H, W]`` after :data:`auditor.maps.BASELINE_POSTPROCESS` and an argsort
    of its values: the same for every image of a size, so made once (read-only)."""
    centre = maplib.BASELINE_POSTPROCESS(centre_gaussian(shape), shape)
    centre.flags.writeable = False
    order = np.argsort(centre, axis=None)
    order.flags.writeable = False
    return centre, order


def _baselines(shape: tuple[int, int], image_id: str) -> dict[str, np.ndarray]:
    """The centre and random maps ``[H, W]`` after :data:`auditor.maps.BASELINE_POSTPROCESS`
    (min-max: exact zeros at their minimum, like every method's map)."""
    random = uniform_random(shape, seed=zlib.crc32(image_id.encode()))
    return {"centre": _centre(tuple(shape))[0], "random": maplib.BASELINE_POSTPROCESS(random, shape)}


def _postprocessed(raw: dict[str, torch.Tensor], posts: dict[str, maplib.PostProcess],
                   at: tuple[int, int], region: maplib.Region | None = None) -> dict[str, np.ndarray]:
    """Each scorable map through its post-processing to ``at`` (placed in the centre crop
    ``region``): the maps that share a post-processing and a token grid in one upsampling
    (``[k, h, w]``: the same values)."""
    groups: dict[tuple, list[str]] = {}
    for method, post in posts.items():
        groups.setdefault((post, tuple(raw[method].shape)), []).append(method)
    out = {}
    for (post, _), methods in groups.items():
        stack = np.stack([np.asarray(raw[m]) for m in methods])
        out.update(zip(methods, post(stack, at, region)))
    return out


def score_shape(shape: tuple[int, int], score_size: int | None) -> tuple[int, int]:
    """``(H, W)`` scaled (aspect kept, rounded, each side >= 1) so that its longest side is at most
    ``score_size``; unchanged when it already is, or when ``score_size`` is None."""
    h, w = int(shape[0]), int(shape[1])
    if score_size is None or max(h, w) <= score_size:
        return h, w
    f = score_size / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def any_pooled(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool ``[h, w]``: True where any pixel of ``a`` (bool ``[H, W]``) in the cell is, with the
    cells of adaptive pooling (``torch.nn.functional.adaptive_max_pool2d``: cell ``i`` covers rows
    ``floor(i H / h)`` to ``ceil((i + 1) H / h) - 1``, likewise columns) -- its values, from the True
    pixels alone: pixel ``r`` lies in cells ``r h // H`` to ``((r + 1) h - 1) // H``."""
    (big_h, big_w), (h, w) = a.shape, shape
    rows, cols = np.divmod(np.flatnonzero(a), big_w)  # (np.nonzero of a 2-D array is ten times slower)
    r0, r1 = rows * h // big_h, ((rows + 1) * h - 1) // big_h
    c0, c1 = cols * w // big_w, ((cols + 1) * w - 1) // big_w
    out = np.zeros((h, w), bool)
    for dr in range(int((r1 - r0).max(initial=0)) + 1):
        for dc in range(int((c1 - c0).max(initial=0)) + 1):
            out[np.minimum(r0 + dr, r1), np.minimum(c0 + dc, c1)] = True
    return out


def shrink_annotations(ann: Any, shape: tuple[int, int]) -> Any:
    """The references at ``shape`` (smaller than theirs): the object mask by area (a pixel is
    object when at least half of it was; a mask that would vanish keeps every pixel it touched),
    fixations by any-pooling (a pixel is fixated when any pixel in it was), gaze density by area
    average. Unchanged when already at ``shape``."""
    def area(a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
        return torch.nn.functional.interpolate(t, size=shape, mode="area")[0, 0].numpy()

    changes = {}
    if ann.mask is not None and ann.mask.shape != tuple(shape):
        half = area(ann.mask) >= 0.5
        changes["mask"] = half if half.any() else any_pooled(ann.mask, shape)
    if ann.fixations is not None and ann.fixations.shape != tuple(shape):
        changes["fixations"] = any_pooled(ann.fixations, shape)
    if ann.gaze is not None and ann.gaze.shape != tuple(shape):
        changes["gaze"] = area(ann.gaze).astype(np.float64)
    return dataclasses.replace(ann, **changes) if changes else ann


def unseen_references(ann: Any, seen: np.ndarray | None) -> list[str]:
    """The metrics whose reference lies wholly outside ``seen`` (bool ``[H, W]``, the model's
    centre crop; None: the whole image), so the model never saw it: box metrics when no mask
    pixel is inside, fixation metrics when no fixation is, density metrics when no gaze mass is."""
    if seen is None:
        return []
    return [name for refs, table in _references(ann) if not (np.asarray(refs) * seen).any() for name in table]


def score_item(image_id: str, shape: tuple[int, int], ann: Any, raw: dict[str, torch.Tensor],
               modes: dict[str, str | maplib.PostProcess], writer: MapWriter | None,
               *, scored_at: tuple[int, int] | None = None,
               region: maplib.Region | None = None) -> tuple[dict, dict]:
    """``(metrics, map_status)`` of one image from its raw maps ``{method: [h, w]}``.

    Each map goes through its method's :class:`auditor.maps.PostProcess` (``modes``: the
    method's recorded normalisation or the object) to ``scored_at`` [default: the image's
    ``shape`` ``(H, W)``; ``ann`` must be at that size, see :func:`shrink_annotations`]
    before scoring, and the baselines through :data:`auditor.maps.BASELINE_POSTPROCESS`; a
    degenerate map (constant, NaN) gets NaN metrics and its problem in ``map_status``.
    ``writer`` receives the raw (and, if it keeps them, image-size) maps under ``image_id``.

    ``region``: the model's centre crop (:meth:`auditor.preprocess.Preprocess.region`); each map
    covers it and is 0 outside (:mod:`auditor.maps`). A reference wholly outside the crop gives
    its metrics NaN and the reason in ``map_status`` (the model never saw the object): it counts
    against the gate like any undefined map. The baselines still cover the whole image.
    """
    status: dict[str, str] = {}
    at = tuple(scored_at) if scored_at is not None else tuple(shape)
    unseen = unseen_references(ann, maplib.region_mask(at, region))
    posts = {}
    for method, token_map in raw.items():
        if writer is not None:
            writer.add(method, image_id, token_map.numpy(),
                       maplib.upsample(token_map, shape, region) if writer.full else None)
        post = maplib.PostProcess.from_mode(modes[method])
        problem = post.problem(token_map)
        if problem:
            status[method] = problem
        else:
            posts[method] = post
    maps = {**_postprocessed(raw, posts, at, region), **_baselines(at, image_id)}
    scored = dict(zip(maps, score_all(np.stack(list(maps.values())), ann,
                                      [None] * len(posts) + [_centre(at)[1], None])))
    metrics = {method: scored[method] if method in scored else _nan_metrics(ann) for method in raw}
    if unseen:
        for method in posts:
            metrics[method].update(dict.fromkeys(unseen, float("nan")))
            status[method] = ("the annotation lies wholly outside the model's centre crop (--resize crop): "
                              "the model never saw it, so " + ", ".join(unseen) + " are undefined")
    return {**metrics, "centre": scored["centre"], "random": scored["random"]}, status


def summarise(rows: Iterable[dict[str, Any]], *, seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary[method][metric]`` = mean, 95% bootstrap CI, n, n_nan over the rows."""
    values: dict[str, dict[str, array]] = {}
    for row in rows:
        add_values(values, row)
    return summary_tables([values], seed)[0]


def add_values(values: dict[str, dict[str, array]], row: dict[str, Any]) -> None:
    """Append a row's metric values (float64 arrays: 8 bytes a value, not a Python float)."""
    for method, mets in (row.get("metrics") or {}).items():
        columns = values.setdefault(method, {})
        for metric, v in mets.items():
            column = columns.get(metric)
            if column is None:
                column = columns[metric] = array("d")
            column.append(np.nan if v is None else float(v))


def add_class_values(groups: dict[str, dict[str, dict[str, array]]], row: dict[str, Any]) -> None:
    """Append a scored row's values to its class's (``label_name``) table; other rows add nothing."""
    if row.get("label_name") is not None and not row.get("error"):
        add_values(groups.setdefault(str(row["label_name"]), {}), row)


def summary_tables(tables: Sequence[dict[str, dict[str, array]]],
                   seed: int) -> list[dict[str, dict[str, dict[str, Any]]]]:
    """``summary[method][metric]`` of each table of values: mean, 95% CI, n, n_nan, and ``interval``:
    how the CI was made -- ``"wilson"`` for a binary metric whose values are all 0 / 1 (a
    percentile bootstrap would collapse to [1, 1] on 5 hits of 5), else ``"bootstrap"``
    (percentile; all tables' in one :func:`~auditor.metrics.bootstrap.bootstrap_cis` call, so
    columns with as many values share their resample draws)."""
    items = [(t, m, k, np.asarray(v, dtype=float)) for t, table in enumerate(tables)
             for m, mets in table.items() for k, v in sorted(mets.items())]
    binary = [k in BINARY_METRICS and is_binary(x) for _, _, k, x in items]
    cis = iter(bootstrap_cis([x for (*_, x), b in zip(items, binary) if not b], seed=seed))
    out: list[dict[str, dict[str, dict[str, Any]]]] = [{m: {} for m in table} for table in tables]
    for (t, m, k, x), b in zip(items, binary):
        out[t][m][k] = {**(wilson_ci(x) if b else next(cis)).to_dict(), "interval": "wilson" if b else "bootstrap"}
    return out


def summarise_per_class(rows: Iterable[dict[str, Any]], seed: int) -> dict[str, Any]:
    """``per_class[class][method][metric]`` (as :func:`summarise`) over each class's scored rows."""
    groups: dict[str, dict[str, dict[str, array]]] = {}
    for r in rows:  # one pass, values only: the rows may be streamed from rows.jsonl
        add_class_values(groups, r)
    return dict(zip(sorted(groups), summary_tables([groups[c] for c in sorted(groups)], seed)))
