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
from .stats import count_below, top_k_mask


def _inputs(saliency: object, mask: object) -> tuple[np.ndarray, np.ndarray]:
    s = real_map(saliency, "saliency")
    return s, bool_mask(mask, s.shape, "mask")


def pointing_game(saliency: np.ndarray, mask: np.ndarray, *, tolerance: float = 0) -> bool:
    """Pointing game hit: is the saliency maximum on the object?

    The point is ``(r, c) = np.unravel_index(np.argmax(saliency), saliency.shape)`` -- the
    first maximum in row-major order. It is a hit when ``mask[r, c]`` or when some mask
    pixel ``(i, j)`` has ``sqrt((i - r)**2 + (j - c)**2) <= tolerance``.

    A constant map is still scored (its point is pixel ``(0, 0)``); the audit runner flags
    constant maps separately, so a score from one should not be read as localisation.

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
    bool
        True for a hit. Over images, the mean is the pointing accuracy (higher is better).

    References
    ----------
    Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down neural attention by excitation
    backprop", IJCV 126, 2018 (ECCV 2016). TorchRay ``torchray/benchmark/pointing_game.py``.
    """
    s, m = _inputs(saliency, mask)
    tol = positive_float(tolerance, "tolerance", allow_zero=True)
    r, c = np.unravel_index(int(np.argmax(s)), s.shape)
    if m[r, c]:
        return True
    if tol == 0:
        return False
    rows, cols = np.nonzero(m)
    return bool(((rows - r) ** 2 + (cols - c) ** 2).min() <= tol * tol)


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
    s, m = _inputs(saliency, mask)
    positive = np.maximum(s, 0.0)
    total = float(positive.sum())
    if total == 0.0:
        return math.nan
    return min(1.0, float(positive[m].sum()) / total)


def relevance_rank(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the ``K`` most salient pixels that lie in the mask, ``K = mask.sum()``.

    ``|top_K(S) & mask| / K``. Ties are broken by a stable sort on descending saliency:
    among equal values the pixel earlier in row-major order ranks higher (like
    ``np.argmax``). A constant map is therefore scored by the first ``K`` pixels of the
    image -- defined, but not meaningful; the runner flags constant maps separately.

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
    return float(np.count_nonzero(m.ravel() & top_k_mask(s, k))) / k


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
    u = float(below.sum()) + float(equal.sum()) / 2.0
    return u / (float(p) * n)
