"""Human-gaze metrics, following the MIT Saliency Benchmark's reference MATLAB code.

References are ``[H, W]`` like the saliency map (MIT resizes the saliency map to the
reference; here the caller does, e.g. :func:`auditor.maps.upsample`):

* ``fixations`` (:func:`nss`, :func:`auc_judd`, :func:`auc_borji`): boolean, True where a
  fixation landed (:func:`fixations_to_map`). None at all raises ``ValueError`` (MIT: NaN;
  here an annotation error the caller checks).
* ``gaze_map`` (:func:`cc`, :func:`kl_div`, :func:`sim`): non-negative density, not all zero. These live in
  :mod:`auditor.metrics.gaze_density` and are re-exported here.

A saliency map for which a metric is undefined (constant, for NSS, CC, SIM and the AUCs)
gives NaN.

Zeros, the same rule for every map: an exact 0 is read as "no saliency here" and nothing is
added to it except MIT's ``eps`` inside KL. The audit feeds every map -- a method's and the
centre and random baselines alike -- through the same :class:`auditor.maps.PostProcess`
(min-max), so each reaches these metrics with exact zeros at its minimum; no map gets a
floor another map does not get.

References
----------
Bylinskii, Judd, Oliva, Torralba & Durand, "What do different evaluation metrics tell us
about saliency models?", IEEE TPAMI 41(3), 2019. Code: github.com/cvzoya/saliency
(``code_forMetrics/*.m``).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from ._validate import bool_mask, is_constant, positive_float, positive_int, real_map, shape_hw
from .gaze_density import (EPS, _centred, _minmax, _to_distribution, cc, correlation, divergence,  # noqa: F401
                           intersection, kl_div, sim, similarity_distribution)


def _with_fixations(saliency: object, fixations: object) -> tuple[np.ndarray, np.ndarray]:
    s = real_map(saliency, "saliency")
    return s, bool_mask(fixations, s.shape, "fixations")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule area under ``y(x)`` (MATLAB's ``trapz(x, y)``)."""
    return float((np.diff(x) * (y[1:] + y[:-1])).sum() / 2.0)


def nss(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Normalized Scanpath Saliency: mean standardised saliency at the fixated pixels.

    ``NSS = mean_{fixated p} (S_p - mean(S)) / std(S)`` with the sample standard deviation
    (``ddof=1``, MATLAB's ``std``), as MIT ``NSS.m``. Each fixated pixel counts once.
    Zeros: values as they are (an exact 0 is the map's lowest value, nothing special).

    Parameters
    ----------
    saliency, fixations : ndarray, shape (H, W)
        Finite real map; boolean map of the fixated pixels (at least one).

    Returns
    -------
    float
        Unbounded, higher is better, 0 for chance; NaN for a constant saliency map.

    References
    ----------
    Peters, Iyer, Itti & Koch, "Components of bottom-up gaze allocation in natural images",
    Vision Research 45, 2005. MIT ``NSS.m`` (Bylinskii et al. 2019).
    """
    return standardised_at(*_with_fixations(saliency, fixations))


def standardised_at(s: np.ndarray, f: np.ndarray) -> float:
    """NSS of a validated float64 map and fixation map (same shape)."""
    if is_constant(s):
        return math.nan
    c = _centred(s)
    return float((c[f] / c.std(ddof=1)).mean())


def auc_judd(saliency: np.ndarray, fixations: np.ndarray, *, jitter: bool = False, seed: int = 0) -> float:
    """AUC-Judd: ROC area with thresholds at the saliency values of the fixated pixels.

    As MIT ``AUC_Judd.m``: ``S`` min-max normalised; the thresholds are the values of ``S``
    at the ``F`` fixated pixels, scanned from the highest; at threshold ``t`` the
    true-positive rate is ``#{fixated >= t} / F`` and the false-positive rate
    ``#{unfixated >= t} / (HW - F)``; the points ``(0, 0)`` and ``(1, 1)`` are added and the
    area is the trapezoid rule. O(HW log HW).

    Ties: with distinct fixated values this is MIT's formula exactly (MIT writes the rates
    ``i / F`` and ``(#{S >= t_i} - i) / (HW - F)``). With fixated pixels sharing a value,
    MIT's ``i / F`` steps through the tie and can leave the unit square (``S = [1, 0, 0]``,
    both 0s fixated: -0.25; MIT's default jitter hides this); here every fixated pixel
    ``>= t`` counts, as in pysaliency's ``general_roc(judd=1)`` (0.5 there). Fixations on
    the exact zeros of a ReLU'd map are the common case. Zeros: values as they are, the
    same for every map (no floor, no epsilon).

    Parameters
    ----------
    saliency, fixations : ndarray, shape (H, W)
        Finite real map; boolean map of the fixated pixels (at least one).
    jitter : bool, default False
        Add uniform noise in ``[0, 1e-7)`` to every pixel before normalising, to break ties
        (MIT's ``jitter=1``, its default). Off by default so a result depends on the map
        alone.
    seed : int, default 0
        Seed of ``np.random.default_rng`` for the jitter.

    Returns
    -------
    float
        In ``[0, 1]``, higher is better, about 0.5 for chance; NaN for a constant map
        (without jitter) or when every pixel is fixated.

    References
    ----------
    Judd, Ehinger, Durand & Torralba, "Learning to predict where humans look", ICCV 2009.
    MIT ``AUC_Judd.m`` (Bylinskii et al. 2019); Kümmerer et al., pysaliency
    (``pysaliency/numba_utils.py``, ``general_roc_numba``).
    """
    s, f = _with_fixations(saliency, fixations)
    if jitter:
        s = s + np.random.default_rng(seed).random(s.shape) / 1e7
    if is_constant(s):
        return math.nan
    s = _minmax(s).ravel()
    flat = f.ravel()
    return judd_area(np.sort(s[flat]), np.sort(s[~flat]))


def judd_area(fixated: np.ndarray, unfixated: np.ndarray) -> float:
    """AUC-Judd from the sorted min-max normalised values at the fixated and the other pixels."""
    if unfixated.size == 0:
        return math.nan
    thresholds = np.unique(fixated)[::-1]
    return judd_curve(fixated, thresholds, unfixated.size - np.searchsorted(unfixated, thresholds, side="left"),
                      unfixated.size)


def judd_curve(fixated: np.ndarray, thresholds: np.ndarray, others_above: np.ndarray, n_others: int) -> float:
    """AUC-Judd from the sorted fixated values, the ``thresholds`` (their distinct values, decreasing)
    and how many of the ``n_others`` other pixels are ``>=`` each threshold."""
    tp = (fixated.size - np.searchsorted(fixated, thresholds, side="left")) / fixated.size
    fp = others_above / n_others
    return _trapezoid(np.concatenate(([0.0], tp, [1.0])), np.concatenate(([0.0], fp, [1.0])))


def auc_borji(saliency: np.ndarray, fixations: np.ndarray, *, n_splits: int = 100, step_size: float = 0.1,
              seed: int = 0) -> float:
    """AUC-Borji: ROC area of fixated pixels against pixels drawn uniformly from the image.

    As MIT ``AUC_Borji.m``: ``S`` min-max normalised; ``F`` = number of fixated pixels. For
    each of ``n_splits`` splits, ``F`` pixels are drawn uniformly with replacement from the
    whole image (fixated ones included) as negatives. Thresholds are ``k * step_size`` for
    ``k = 0, 1, ...`` up to the largest value among the split's positives and negatives
    (MATLAB's ``0:stepSize:max``), scanned from the top; tp / fp rates are the shares of
    fixated / sampled values ``>= threshold``; ``(0, 0)`` and ``(1, 1)`` are added, the
    area is the trapezoid rule, and the score is the mean over splits. The draws come from
    NumPy, not MATLAB: values agree with MIT's in distribution, not digit for digit.
    Zeros: values as they are (the threshold 0 counts every pixel), the same for every map.

    A single fixated pixel gives NaN: MIT's ``AUC_Borji.m`` gives no score for one fixation
    (``randfix = S(r)`` with ``r`` of size ``[1, Nsplits]`` is an ``Nsplits x 1`` column,
    MATLAB keeping the orientation of the indexed vector, so ``randfix(:, 2)`` is out of
    range), and the Python ports of that code return NaN for ``sum(fixation_map) <= 1``;
    one fixation against one random pixel per split is no ROC curve.

    Parameters
    ----------
    saliency, fixations : ndarray, shape (H, W)
        Finite real map; boolean map of the fixated pixels (at least one).
    n_splits : int, default 100
        Number of random negative sets.
    step_size : float, default 0.1
        Threshold spacing on the normalised map, > 0.
    seed : int, default 0
        Seed of ``np.random.default_rng``.

    Returns
    -------
    float
        In ``[0, 1]``, higher is better, about 0.5 for chance; NaN for a constant map or a
        single fixated pixel.

    References
    ----------
    Borji, Tavakoli, Sihite & Itti, "Analysis of scores, datasets, and models in visual
    saliency prediction", ICCV 2013. MIT ``AUC_Borji.m`` (Bylinskii et al. 2019).
    """
    s, f = _with_fixations(saliency, fixations)
    n_splits = positive_int(n_splits, "n_splits")
    step = positive_float(step_size, "step_size")
    if is_constant(s) or np.count_nonzero(f) < 2:
        return math.nan
    s = _minmax(s).ravel()
    at_fix = np.sort(s[f.ravel()])
    return borji_area(at_fix, s[borji_draws(s.size, at_fix.size, n_splits, seed)], step)


@functools.lru_cache(maxsize=64)
def borji_draws(n: int, n_fix: int, n_splits: int, seed: int) -> np.ndarray:
    """AUC-Borji's negatives: ``n_fix`` pixel indices per split, drawn uniformly from ``n`` (the same
    for every map with these counts: made once, read-only)."""
    draws = np.random.default_rng(seed).integers(0, n, size=(n_splits, n_fix))
    draws.flags.writeable = False
    return draws


def borji_area(at_fix: np.ndarray, negatives: np.ndarray, step: float) -> float:
    """AUC-Borji from the sorted normalised values at the fixations ``[F]`` and each split's
    negatives ``[n_splits, F]``."""
    return float(borji_areas(at_fix[None], negatives[None], step)[0])


def borji_areas(at_fix: np.ndarray, negatives: np.ndarray, step: float) -> np.ndarray:
    """:func:`borji_area` of ``R`` maps at once: ``at_fix`` ``[R, F]`` (rows sorted), ``negatives``
    ``[R, n_splits, F]`` -> ``[R]``; the maps that share a top threshold are computed together, each
    split's area with the same operations as alone."""
    # every split's thresholds step * k, k = kmax..0, at once: a split whose own top is lower
    # gets extra (0, 0) points for k above it, which add no area
    tops = np.maximum(at_fix[:, -1:], negatives.max(2))
    k_tops = np.floor(tops / step * (1 + 1e-10)).max(1).astype(int)  # MATLAB's 0:step:top keeps the end point
    out = np.empty(len(at_fix))
    for k_top in np.unique(k_tops):
        rows = k_tops == k_top
        out[rows] = _split_areas(at_fix[rows], negatives[rows], step, int(k_top)).mean(1)
    return out


def _split_areas(at_fix: np.ndarray, negatives: np.ndarray, step: float, k_top: int) -> np.ndarray:
    """Each split's ROC area ``[R, n_splits]`` at the thresholds ``step * k``, ``k = k_top..0``."""
    (rows, n_splits, n_fix), n_thresholds = negatives.shape, k_top + 1
    thresholds = step * np.arange(k_top, -1, -1)
    below = np.count_nonzero(at_fix[:, :, None] < thresholds, axis=1)  # np.searchsorted(at_fix, thresholds)
    tp = (n_fix - below) / n_fix
    y = np.concatenate((np.zeros((rows, 1)), tp, np.ones((rows, 1))), axis=1)
    heights = (y[:, 1:] + y[:, :-1])[:, None, :]
    aucs = np.empty((rows, n_splits))
    chunk = max(1, (1 << 20) // (n_thresholds * rows))  # splits at a time: bounded memory for a tiny step_size
    for i in range(0, n_splits, chunk):
        neg = negatives[:, i:i + chunk].reshape(-1, n_fix)
        fp = _count_at_least(neg, step, k_top)[:, ::-1] / n_fix  # [maps x splits, thresholds], same order
        x = np.concatenate((np.zeros((len(neg), 1)), fp, np.ones((len(neg), 1))), axis=1)
        aucs[:, i:i + chunk] = (np.diff(x, axis=1).reshape(rows, -1, n_thresholds + 1) * heights).sum(2) / 2.0
    return aucs


def _count_at_least(values: np.ndarray, step: float, k_top: int) -> np.ndarray:
    """``out[i, k]`` = how many of ``values[i]`` (``[n, m]``, >= 0) are ``>= step * k``, k = 0..k_top,
    compared exactly as ``values >= step * k`` (no binning error at the thresholds)."""
    g = np.clip(np.floor(values / step).astype(np.int64), 0, k_top)  # off by at most one: fix both ways
    g = np.where((g < k_top) & (step * (g + 1) <= values), g + 1, g)
    g = np.where(step * g > values, g - 1, g)
    n = values.shape[0]
    hist = np.bincount((np.arange(n)[:, None] * (k_top + 1) + g).ravel(), minlength=n * (k_top + 1))
    return np.cumsum(hist.reshape(n, k_top + 1)[:, ::-1], axis=1)[:, ::-1]


def fixations_to_map(points: Sequence[Sequence[float]] | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Boolean fixation map ``[H, W]`` from ``(x, y)`` points.

    ``x`` is the column, ``y`` the row; pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``
    (centres at ``+0.5``, the convention of the box masks), so each point goes to pixel
    ``(floor(y), floor(x))``. Annotation loading (:func:`auditor.data.fixation_map`) uses this
    function.

    Parameters
    ----------
    points : array_like, shape (N, 2)
        ``(x, y)`` pairs; N may be 0.
    shape : (H, W)
        Size of the map.

    Returns
    -------
    ndarray of bool, shape (H, W)

    Raises
    ------
    ValueError
        A point that is not finite or rounds outside the image, naming the point.
    """
    h, w = shape_hw(shape)
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (x, y) pairs, got shape {pts.shape}")
    cols, rows = np.floor(pts[:, 0]), np.floor(pts[:, 1])  # NaN stays NaN: fails below
    outside = ~((cols >= 0) & (cols < w) & (rows >= 0) & (rows < h))
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"fixation {i} at (x={pts[i, 0]:g}, y={pts[i, 1]:g}) lies outside the {w}x{h} image "
                         f"(width x height): x must lie in [0, {w}) and y in [0, {h}); check the "
                         f"coordinate order (x = column first) and scaling")
    out = np.zeros((h, w), dtype=bool)
    out[rows.astype(np.intp), cols.astype(np.intp)] = True
    return out
