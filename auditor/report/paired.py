"""Statistics of two runs over the same images: paired metric deltas and map agreement.

Images are paired by id (both runs scored them). A delta is ``B - A`` per image; its mean
has a paired bootstrap 95% CI (few-shot rows: resampling episodes and images, not rows) and a
two-sided paired permutation test p-value. "Worse"
means the CI excludes zero on the bad side of the metric (direction from
``auditor.metrics.HIGHER_IS_BETTER``). Map agreement compares A's and B's token maps after
each went through its method's :class:`auditor.maps.PostProcess` to the image's size (the
maps that were scored): Spearman rank correlation, Pearson CC, top-k overlap.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from .. import maps as maplib
from .common import higher_is_better, resolve_image

TOP_K = 0.1  # top-k overlap: intersection over union of A's and B's top 10% pixels
AGREEMENT = ("spearman", "cc", "top_k_overlap")


@dataclass
class Pairs:
    """The images both runs scored, in A's order, held as arrays rather than rows: 50,000 pairs
    cost a few numbers each, not two parsed rows.

    ``ids``: image ids; ``images``: each side's recorded image path; ``values[(method, metric)]``:
    ``(a, b)`` float64 arrays, NaN where a run has no value; ``clusters``: B's
    :func:`auditor.gate.pair_clusters` per pair (few-shot rows), else None.
    """

    ids: list[str]
    images: list[tuple[Any, Any]]
    values: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
    clusters: list[Any]

    def __len__(self) -> int:
        return len(self.ids)


def pair_rows(rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]], methods: Sequence[str],
              metrics: Sequence[str]) -> tuple[Pairs, dict[str, int]]:
    """Rows scored by both runs (by id; B's last row of an id), in A's order, with the values of
    ``methods`` x ``metrics``; counts of paired and unpaired images. One pass over each run's rows."""
    from ..gate import pair_clusters

    keys = [(m, k) for m in methods for k in metrics]
    at_b: dict[str, int] = {}
    b_vals: dict[tuple[str, str], array] = {mk: array("d") for mk in keys}
    b_images, b_clusters = [], []
    for r in rows_b:
        if not r.get("error"):
            at_b[str(r["id"])] = len(b_images)
            b_images.append(r.get("image"))
            b_clusters.append(pair_clusters(r))
            for mk in keys:
                b_vals[mk].append(_value(r, *mk))
    ids, images, take, n_a = [], [], array("q"), 0
    a_vals: dict[tuple[str, str], array] = {mk: array("d") for mk in keys}
    for r in rows_a:
        if r.get("error"):
            continue
        n_a += 1
        j = at_b.get(str(r["id"]))
        if j is None:
            continue
        ids.append(str(r["id"]))
        images.append((r.get("image"), b_images[j]))
        take.append(j)
        for mk in keys:
            a_vals[mk].append(_value(r, *mk))
    idx = np.frombuffer(take, dtype=np.int64) if take else np.zeros(0, dtype=np.int64)
    values = {mk: (np.frombuffer(a_vals[mk], dtype=float) if a_vals[mk] else np.zeros(0),
                   np.frombuffer(b_vals[mk], dtype=float)[idx] if b_vals[mk] else np.zeros(0)) for mk in keys}
    pairs = Pairs(ids, images, values, [b_clusters[j] for j in take])
    return pairs, {"paired": len(ids), "only_a": n_a - len(ids), "only_b": len(at_b) - len(ids)}


def _value(row: Mapping[str, Any], method: str, metric: str) -> float:
    v = (row.get("metrics") or {}).get(method, {}).get(metric)
    return float("nan") if v is None else float(v)


def metric_deltas(pairs: Pairs, methods: Sequence[str], metrics: Sequence[str], *, seed: int = 0
                  ) -> dict[str, dict[str, dict[str, Any]]]:
    """``deltas[method][metric]``: means of A and B, mean delta B - A with 95% CI, p-value, verdict."""
    from ..gate import clusters_of
    from ..metrics import paired_bootstrap_ci, paired_permutation_test

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in methods:
        for k in metrics:
            a, b = pairs.values[(m, k)]
            keep = np.isfinite(a) & np.isfinite(b)
            if not keep.any():
                continue
            a, b = a[keep], b[keep]
            clusters = clusters_of([c for c, kept in zip(pairs.clusters, keep) if kept])
            ci = _as_dict(paired_bootstrap_ci(a, b, seed=seed, clusters=clusters))
            p = _p_value(paired_permutation_test(a, b, seed=seed, clusters=clusters))
            lo, hi = ci.get("ci_low"), ci.get("ci_high")
            worse = better = False
            if lo is not None and hi is not None:  # the CI of B - A excludes zero
                worse, better = (hi < 0, lo > 0) if higher_is_better(k) else (lo > 0, hi < 0)
            out.setdefault(m, {})[k] = {"n": int(keep.sum()), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                                        "delta": float((b - a).mean()), "ci_low": lo, "ci_high": hi, "p_value": p,
                                        "worse": bool(worse), "better": bool(better)}
    return out


def _as_dict(ci: Any) -> dict[str, Any]:
    d = ci.to_dict() if hasattr(ci, "to_dict") else dict(ci)
    return {k: (None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in d.items()}


def _p_value(res: Any) -> float:
    for attr in ("p_value", "pvalue", "p"):
        if hasattr(res, attr):
            return float(getattr(res, attr))
    return float(res)


def image_shape(path: Path | None) -> tuple[int, int] | None:
    """``(H, W)`` as displayed (EXIF rotation applied), read from the header only."""
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
            return h, w
    except OSError:
        return None


def map_agreement(map_a: np.ndarray | None, map_b: np.ndarray | None, shape: tuple[int, int] | None,
                  norm_a: str | maplib.PostProcess, norm_b: str | maplib.PostProcess, *,
                  regions: tuple[maplib.Region | None, maplib.Region | None] = (None, None)) -> dict[str, float]:
    """Spearman, CC and top-k overlap of two raw token maps, each post-processed to ``shape``
    (``norm_a`` / ``norm_b``: each side's :class:`auditor.maps.PostProcess` or recorded mode;
    ``regions``: each side's centre crop, outside which its map is 0)."""
    nan = {k: float("nan") for k in AGREEMENT}
    if map_a is None or map_b is None:
        return nan
    if shape is None:  # no image: the finer grid of the two
        shape = tuple(max(map_a.shape[i], map_b.shape[i]) for i in (0, 1))
    try:
        a = maplib.PostProcess.from_mode(norm_a)(map_a, shape, regions[0])
        b = maplib.PostProcess.from_mode(norm_b)(map_b, shape, regions[1])
    except ValueError:
        return nan
    from ..metrics import agreement, gaze

    return {"spearman": _safe(agreement.spearman, a, b), "cc": _safe(gaze.cc, a, b),
            "top_k_overlap": _safe(lambda x, y: agreement.top_k_overlap(x, y, fraction=TOP_K), a, b)}


def _safe(fn, a: np.ndarray, b: np.ndarray) -> float:
    if a.max() <= a.min() or b.max() <= b.min():
        return float("nan")  # a constant map has no ranking to agree with
    return float(fn(a, b))


def agreement_summary(agreement: np.ndarray, methods: Sequence[str], *, seed: int = 0
                      ) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary[method][measure]`` = mean, 95% bootstrap CI, n over images; ``agreement``
    ``[images, methods, measures]`` (measures in :data:`AGREEMENT` order, NaN = undefined)."""
    from ..metrics import bootstrap_ci

    return {m: {k: _as_dict(bootstrap_ci(np.ascontiguousarray(agreement[:, j, n], dtype=float), seed=seed))
                for n, k in enumerate(AGREEMENT)} for j, m in enumerate(methods)}


def resolve_pair_image(images: tuple[Any, Any], bases: tuple[Path, Path]) -> Path | None:
    """A pair's image file: A's recorded path, else B's (``images`` as in :attr:`Pairs.images`)."""
    return resolve_image(images[0], bases[0]) or resolve_image(images[1], bases[1])
