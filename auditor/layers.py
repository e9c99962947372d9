"""Which layer's attention agrees best with the annotation: per-layer scores.

Methods that return a map per layer (``MapResult.extras["per_layer"]``, ``[B, L, h, w]``,
e.g. ``cls_attention``: the head-mean CLS attention of every block) are scored layer by
layer with the box metrics that summarise localisation (``LAYER_METRICS``). Rows carry
``per_layer[method][metric] = [value per layer]``; :func:`summarise_layers` turns them
into ``per_layer[method][metric] = [summary per layer]`` for results.json and the report.
"""

from __future__ import annotations

from array import array
from typing import Any, Iterable

import numpy as np
import torch

from . import maps as maplib
from .metrics.stats import bootstrap_cis
from .metrics.batched import score_maps

LAYER_METRICS = ("pointing_game", "relevance_mass")


def score_layers(extras: dict[str, dict[str, torch.Tensor]], index: int, mask: np.ndarray | None,
                 modes: dict[str, str], *, region: maplib.Region | None = None) -> dict[str, dict[str, list[float | None]]]:
    """Per-layer metric values of image ``index`` for every method with ``per_layer`` maps.

    ``extras``: ``{method: MapResult.extras}``; ``mask``: the image's box mask ``[H, W]``
    (None: nothing to score). A layer whose map is constant scores None; so does every layer
    when the object lies wholly outside the model's centre crop ``region``.
    """
    if mask is None:
        return {}
    shape = mask.shape
    seen = maplib.region_mask(shape, region)
    if seen is not None and not (mask & seen).any():  # the object is outside the crop: no layer can be scored
        mask = None
    out: dict[str, dict[str, list[float | None]]] = {}
    for method, ex in extras.items():
        layers = ex.get("per_layer")
        if layers is None:
            continue
        raw = layers[index].numpy()
        post = maplib.PostProcess.from_mode(modes[method])
        ok = np.array([mask is not None and p is None for p in post.problems(raw)], dtype=bool)
        out[method] = {k: [None] * len(ok) for k in LAYER_METRICS}
        if not ok.any():
            continue
        # the scorable layers, in one upsampling and one call (the per-map functions' values)
        values = score_maps(post(raw[ok], shape, region), mask=mask, names=LAYER_METRICS)
        for k in LAYER_METRICS:
            for j, v in zip(np.flatnonzero(ok), values[k]):
                out[method][k][j] = float(v)
    return out


def summarise_layers(rows: Iterable[dict[str, Any]], *, seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """``per_layer[method][metric]`` = one bootstrap summary (mean, CI, n) per layer; metrics
    with no finite value at any layer are left out."""
    values: dict[str, dict[str, list[array]]] = {}
    for row in rows:
        add_layer_values(values, row)
    return layer_summaries(values, seed=seed)


def add_layer_values(values: dict[str, dict[str, list[array]]], row: dict[str, Any]) -> None:
    """Append a row's per-layer values (one float64 array per layer; None -> NaN)."""
    for method, mets in (row.get("per_layer") or {}).items():
        columns = values.setdefault(method, {})
        for metric, per_layer in mets.items():
            cols = columns.get(metric)
            if cols is None:
                cols = columns[metric] = [array("d") for _ in per_layer]
            for col, v in zip(cols, per_layer):
                col.append(np.nan if v is None else float(v))


def layer_summaries(values: dict[str, dict[str, list[array]]], *, seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """:func:`summarise_layers` of the values :func:`add_layer_values` collected (every layer's
    CI in one :func:`~auditor.metrics.bootstrap.bootstrap_cis` call: layers share their draws)."""
    kept = [(m, k, [np.asarray(c, dtype=float) for c in cols])
            for m, mets in values.items() for k, cols in mets.items()]
    kept = [(m, k, cols) for m, k, cols in kept if any(np.isfinite(c).any() for c in cols)]  # all undefined: left out
    cis = iter(bootstrap_cis([c for *_, cols in kept for c in cols], seed=seed))
    out: dict[str, dict[str, list[dict]]] = {}
    for m, k, cols in kept:
        out.setdefault(m, {})[k] = [next(cis).to_dict() for _ in cols]
    return out
