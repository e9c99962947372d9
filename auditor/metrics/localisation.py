"""Localisation metrics: does the saliency map fall on the annotated object?

Every function takes ``(saliency, mask)``: ``saliency`` a finite real ``[H, W]`` map (any
scale and sign unless stated), ``mask`` a boolean ``[H, W]`` map of the same shape, True
inside the object (the union of its bounding boxes, :func:`auditor.data.box_mask`), with
at least one True pixel -- an empty mask raises :class:`ValueError` (an annotation error
the caller checks). Values are computed in float64.

The energy-based pointing game (Wang et al., "Score-CAM", CVPRW 2020) is
:func:`relevance_mass` on a non-negative map; it is not repeated here.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import bool_mask, positive_float, real_map
from .stats import count_below


def _inputs(saliency: object, mask: object) -> tuple[np.ndarray, np.ndarray]:
    s = real_map(saliency, "saliency")
    return s, bool_mask(mask, s.shape, "mask")


def pointing_game(saliency: np.ndarray, mask: np.ndarray, *, tolerance: float = 0) -> float:
    """Pointing game: is the saliency maximum on the object? With several maxima, the share
    of them that hit.

    A maximal pixel ``(r, c)`` hits when ``mask[r, c]`` or when some mask pixel ``(i, j)``
    has ``sqrt((i - r)**2 + (j - c)**2) <= tolerance``. With one maximum the score is 1 or
    0, as in the original game. With ``M`` pixels sharing the maximum (a ReLU'd map flat at
    its top, a constant map, an upsampled token) the score is ``(#maximal pixels that hit)
    / M``: the expected hit when the point is chosen uniformly among the maxima. Unlike a
    first-in-row-major ``argmax`` it has no orientation bias (a rotated image with rotated
    boxes scores the same), and unlike Quantus's ``PointingGame`` (a hit if *any* maximum
    is on the object, ``np.any(s[argwhere(a == max(a))])``) a constant map scores the mask's
    share of the image (chance), not 1. The audit runner also flags constant maps.

    Parameters
    ----------
    saliency : ndarray, shape (H, W)
        Finite real values.
    mask : ndarray of bool, shape (H, W)
        The object, at least one True pixel.
    tolerance : float, default 0
        Margin in pixels (Euclidean, pixel centres) around the mask, >= 0. Zhang et al. and
        TorchRay's benchmark use 15 px. TorchRay accepts distances strictly below the
        tolerance (``d**2 < 15**2``), so it counts no hit at all with tolerance 0; here the
        bound is inclusive, which differs from TorchRay only for points at exactly that
        distance.

    Returns
    -------
    float
        In ``[0, 1]``; 1.0 / 0.0 for a single maximum. Over images, the mean is the pointing
        accuracy (higher is better).

    References
    ----------
    Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down neural attention by excitation
    backprop", IJCV 126, 2018 (ECCV 2016). TorchRay ``torchray/benchmark/pointing_game.py``;
    Quantus ``quantus/metrics/localisation/pointing_game.py`` (the "any maximum" rule).
    """
    s, m = _inputs(saliency, mask)
    tol = positive_float(tolerance, "tolerance", allow_zero=True)
    return hits_at_maximum(s, m | _within(m, tol) if tol > 0 else m)


def hits_at_maximum(s: np.ndarray, m: np.ndarray) -> float:
    """The pointing game's score of a validated float64 map and mask (same shape)."""
    top = s == s.max()
    return float(np.count_nonzero(top & m)) / float(np.count_nonzero(top))


def _within(mask: np.ndarray, tol: float) -> np.ndarray:
    """Pixels whose centre lies within ``tol`` (Euclidean, inclusive) of a mask pixel's centre."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~mask) <= tol


def top_k_share(values: np.ndarray, k: int) -> np.ndarray:
    """Chance that each pixel is among the ``k`` largest when ties are broken at random.

    ``v`` = the ``k``-th largest value; pixels above ``v`` get 1, pixels below 0, and the
    ``t`` pixels equal to ``v`` share the ``r`` remaining places: ``r / t`` each (fractional
    credit). Sums to ``k``. ``values`` any shape (read flat) -> float64 ``[N]``.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if k >= flat.size:
        return np.ones(flat.size)
    cut = np.partition(flat, flat.size - k)[flat.size - k]
    return _shares(flat, k, cut, int(np.count_nonzero(flat > cut)), int(np.count_nonzero(flat == cut)))


def _shares(values: np.ndarray, k: int, cut: float, n_above: int, n_tied: int) -> np.ndarray:
    """:func:`top_k_share` of ``values`` (some of the pixels) given the cut of all the pixels."""
    share = (values > cut).astype(np.float64)
    share[values == cut] = (k - n_above) / n_tied
    return share


def relevance_mass(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive saliency that lies inside the mask.

    ``sum(max(S, 0)[mask]) / sum(max(S, 0))``. Negative values are ignored (set to 0), as
    in CLEVR-XAI, where only positive relevance is counted. On a non-negative map this is
    the energy-based pointing game of Score-CAM (Wang et al. 2020).

    Parameters
    ----------
    saliency : ndarray, shape (H, W)
        Finite real values.
    mask : ndarray of bool, shape (H, W)
        The object, at least one True pixel.

    Returns
    -------
    float
        In ``[0, 1]``, higher is better; NaN when no value is positive (undefined).

    References
    ----------
    Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of
    neural network explanations", Information Fusion 81, 2022 (Relevance Mass Accuracy).
    """
    return positive_share(*_inputs(saliency, mask))


def positive_share(s: np.ndarray, m: np.ndarray) -> float:
    """Relevance mass of a validated float64 map and mask (same shape)."""
    positive = np.maximum(s, 0.0)
    total = float(positive.sum())
    if total == 0.0:
        return math.nan
    return min(1.0, float(positive[m].sum()) / total)


def relevance_rank(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the ``K`` most salient pixels that lie in the mask, ``K = mask.sum()``.

    ``E|top_K(S) & mask| / K`` with ties at the cut broken at random: the pixels tied with
    the ``K``-th largest value share the remaining places equally (:func:`top_k_share`),
    so each counts its chance of being chosen. This is the expected score under random
    tie-breaking, exact (the count is linear in the choice); without ties at the cut it is
    Arras et al.'s formula. No orientation bias: a ReLU'd map mostly flat at 0 scores the
    same against a top-half and a bottom-half box, and a constant map scores ``K / HW``
    (chance) whatever the box.

    Parameters
    ----------
    saliency : ndarray, shape (H, W)
        Finite real values (signed values are ranked as they are).
    mask : ndarray of bool, shape (H, W)
        The object, at least one True pixel.

    Returns
    -------
    float
        In ``[0, 1]``, higher is better; 1 when the mask covers the whole image.

    References
    ----------
    Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 81, 2022 (Relevance Rank Accuracy).
    """
    s, m = _inputs(saliency, mask)
    k = int(m.sum())
    return min(1.0, float(top_k_share(s, k)[m.ravel()].sum()) / k)


def rank_share(inside: np.ndarray, k: int, n: int, cut: float, n_above: int, n_tied: int) -> float:
    """Relevance rank from the mask pixels' values ``inside`` (``[K]`` in row-major order,
    ``K = k``), the ``n`` pixels' ``k``-th largest value ``cut`` and how many pixels lie above
    it and equal it -- the same shares and the same sum as :func:`relevance_rank`."""
    share = np.ones(inside.size) if k >= n else _shares(inside, k, cut, n_above, n_tied)
    return min(1.0, float(share.sum()) / k)


def auc_roc(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of the saliency as a score separating mask from background.

    Computed from average ranks (Mann-Whitney U), ties between a mask and a background pixel
    counted one half, exactly as ``sklearn.metrics.roc_auc_score(mask.ravel(),
    saliency.ravel())``::

        AUC = (sum of ranks of mask pixels - P (P + 1) / 2) / (P N)

    with ``P`` mask and ``N`` background pixels; O(HW log HW).

    Parameters
    ----------
    saliency : ndarray, shape (H, W)
        Finite real values.
    mask : ndarray of bool, shape (H, W)
        The object, at least one True pixel.

    Returns
    -------
    float
        In ``[0, 1]``, higher is better, 0.5 for chance and for a constant map; NaN when the
        mask covers the whole image (no background to separate from).

    References
    ----------
    Hanley & McNeil, "The meaning and use of the area under a receiver operating
    characteristic (ROC) curve", Radiology 143, 1982.
    """
    s, m = _inputs(saliency, mask)
    flat = m.ravel()
    p = int(flat.sum())
    n = flat.size - p
    if n == 0:
        return math.nan
    # rank sum of the mask pixels minus P (P + 1) / 2 is U = sum over mask pixels of
    # #{background < v} + #{background == v} / 2: one sort of the background, no argsort
    flat_s = s.ravel()
    below, equal = count_below(np.sort(flat_s[~flat]), np.sort(flat_s[flat]))
    return auc_from_counts(int(below.sum()), int(equal.sum()), p, n)


def auc_from_counts(below: int, equal: int, p: int, n: int) -> float:
    """``U / (P N)`` with ``U = below + equal / 2``: ``below`` the (mask, background) pairs
    ordered, ``equal`` those tied (exact integers)."""
    u = float(below) + float(equal) / 2.0
    return u / (float(p) * n)
