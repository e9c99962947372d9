"""Curve maths of the faithfulness checks (:mod:`auditor.faithfulness`): pure numpy.

The checks themselves run the model; what they measure is summarised here:

* :func:`removal_fractions` -- the grid ``0, 1/steps, ..., 1`` of removed (or inserted) pixels;
* :func:`curve_auc` -- area under a probability curve, trapezoid over the fraction ``0..1``;
* :func:`pixel_counts` -- how many pixels each fraction removes;
* :func:`normalised_curve` -- a curve divided by the unperturbed image's score;
* :func:`area_above_random` -- how far a map's normalised curve beats a random pixel order.

Why normalise and compare with a random order: the raw area is a probability, so a less
confident model (the same ranking, a flatter softmax) has a *smaller* deletion area and looks
more faithful, and an image the model gets wrong starts near 0 and scores well whatever the
map. Divided by the unperturbed score every deletion curve starts at 1 (every insertion curve
ends at 1), and the area *between* the curve of a random pixel order and the map's curve
measures what the map's order adds: 0 for a map no better than chance, whatever the
confidence (as ROAR's random-ranking baseline: Hooker, Erhan, Kindermans & Kim, "A Benchmark
for Interpretability Methods in Deep Neural Networks", NeurIPS 2019).
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import positive_int

__all__ = ["area_above_random", "curve_auc", "curve_scores", "normalised_curve", "pixel_counts", "removal_fractions"]

MODES = ("deletion", "insertion")


def removal_fractions(steps: int) -> np.ndarray:
    """``[0, 1/steps, 2/steps, ..., 1]`` (float64, ``steps + 1`` values)."""
    steps = positive_int(steps, "steps")
    return np.arange(steps + 1, dtype=np.float64) / steps


def pixel_counts(fractions: np.ndarray, num_pixels: int) -> np.ndarray:
    """Pixels removed at each fraction: ``ceil(f * num_pixels)`` (exact for ``f = k / steps``)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or not np.all((f >= 0) & (f <= 1)):
        raise ValueError("fractions must be a 1-D array of values in [0, 1]")
    return np.minimum(np.ceil(f * num_pixels - 1e-9), num_pixels).astype(np.int64)


def curve_auc(values: np.ndarray, fractions: np.ndarray | None = None) -> float:
    """Area under a deletion / insertion curve, trapezoid rule over the fraction axis.

    ``values[k]`` is the target-class probability after removing (deletion) or inserting
    (insertion) the fraction ``fractions[k]`` of the pixels, most salient first; fractions
    default to an even grid from 0 to 1 (:func:`removal_fractions`), so the area is the mean
    probability with the two end points at half weight: ``(sum(v) - v[0]/2 - v[-1]/2) /
    steps``. This is the normalisation of the RISE authors' ``auc`` (Petsiuk et al., BMVC
    2018, github.com/eclique/RISE ``evaluation.py``). Quantus' ``PixelFlipping`` instead
    integrates its curve with ``dx = 1`` and without the unperturbed point (see
    ``tests/reference_faithfulness.json``).

    Returns
    -------
    float
        In ``[0, 1]`` for probabilities; NaN when any value is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"values must be a 1-D curve of at least 2 points, got shape {v.shape}")
    f = removal_fractions(v.size - 1) if fractions is None else np.asarray(fractions, dtype=np.float64)
    if f.shape != v.shape:
        raise ValueError(f"fractions {f.shape} and values {v.shape} must have the same shape")
    if np.isnan(v).any():
        return math.nan
    return float(np.sum((v[1:] + v[:-1]) * np.diff(f)) / 2)


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def normalised_curve(values: np.ndarray, mode: str) -> np.ndarray:
    """Curves ``[..., K]`` divided by the score of the unperturbed image (float64, same shape).

    The unperturbed image is the first point of a deletion curve (nothing removed) and the last
    of an insertion curve (everything inserted), so deletion curves start at 1 and insertion
    curves end at 1. Values above 1 stay (removing pixels can raise the score). A curve whose
    unperturbed score is not positive and finite is all NaN (nothing to normalise by).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 1 or v.shape[-1] < 2:
        raise ValueError(f"values must be curves [..., K] with K >= 2 points, got shape {v.shape}")
    ref = v[..., :1] if _mode(mode) == "deletion" else v[..., -1:]
    ok = np.isfinite(ref) & (ref > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, v / np.where(ok, ref, 1.0), np.nan)


def area_above_random(curve: np.ndarray, random_curve: np.ndarray, mode: str,
                      fractions: np.ndarray | None = None) -> float:
    """How much a map's order beats a random pixel order: the signed area between the two curves.

    ``deletion``: ``auc(random_curve) - auc(curve)`` (the map's curve should fall faster);
    ``insertion``: ``auc(curve) - auc(random_curve)`` (it should rise faster); areas by
    :func:`curve_auc`. Higher is better for both; 0 means no better than chance, negative worse.
    Pass both curves normalised (:func:`normalised_curve`) so that the score does not grow with
    the model's confidence. NaN when either curve has a NaN.
    """
    a, r = curve_auc(curve, fractions), curve_auc(random_curve, fractions)
    return r - a if _mode(mode) == "deletion" else a - r


def curve_scores(curves: np.ndarray, random_curves: np.ndarray, mode: str) -> dict[str, np.ndarray]:
    """Everything reported for deletion or insertion curves ``[B, K]`` (target probabilities) and the
    random order's ``[B, K]`` of the same images: ``{mode}_normalised`` ``[B, K]`` and, each ``[B]``,
    ``{mode}_auc`` (raw area), ``{mode}_auc_normalised`` and ``{mode}_vs_random``
    (:func:`area_above_random` of the normalised curves)."""
    c, r = np.asarray(curves, dtype=np.float64), np.asarray(random_curves, dtype=np.float64)
    if c.ndim != 2 or c.shape != r.shape:
        raise ValueError(f"curves {c.shape} and random_curves {r.shape} must both be [B, K]")
    norm, rnorm = normalised_curve(c, mode), normalised_curve(r, mode)
    return {f"{mode}_normalised": norm,
            f"{mode}_auc": np.array([curve_auc(v) for v in c]),
            f"{mode}_auc_normalised": np.array([curve_auc(v) for v in norm]),
            f"{mode}_vs_random": np.array([area_above_random(a, b, mode) for a, b in zip(norm, rnorm)])}
