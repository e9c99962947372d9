"""Agreement between two saliency maps of the same image (two models, or two methods).

Pearson correlation is :func:`auditor.metrics.gaze.cc` (re-exported here as ``cc``); this
module adds a rank correlation and the overlap of the most salient pixels. Both maps are
finite real ``[H, W]`` arrays of the same shape; the functions are symmetric in them.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import fraction as _fraction
from ._validate import real_map, same_shape
from .gaze import cc
from .localisation import top_k_share
from .stats import rank_average

__all__ = ["cc", "spearman", "top_k_overlap"]


def _pair(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    x = real_map(a, "a")
    y = real_map(b, "b")
    same_shape(x.shape, y, "b", first="a")
    return x, y


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's CC of the two maps' average ranks.

    ``rho = cc(rank(a), rank(b))``, ties given their average rank (as
    ``scipy.stats.spearmanr``).

    Parameters
    ----------
    a, b : ndarray, shape (H, W)
        Finite real values.

    Returns
    -------
    float
        In ``[-1, 1]``, higher means more agreement; NaN when either map is constant.

    References
    ----------
    Spearman, "The proof and measurement of association between two things", Am. J.
    Psychol. 15, 1904.
    """
    x, y = _pair(a, b)
    return cc(rank_average(x).reshape(x.shape), rank_average(y).reshape(y.shape))


def top_k_overlap(a: np.ndarray, b: np.ndarray, *, fraction: float = 0.1) -> float:
    """Intersection over union of the two maps' top-``fraction`` pixel sets.

    ``k = ceil(fraction * H * W)`` (at least 1); ``A``, ``B`` the ``k`` most salient pixels
    of each map. Ties at the cut are broken at random, one random order of the pixels for
    both maps: pixel ``p`` is in ``A`` with chance ``pa`` (1 above the cut, 0 below, the
    free places shared equally among the pixels tied with the ``k``-th value,
    :func:`auditor.metrics.localisation.top_k_share`) and in ``B`` with chance ``pb``; the
    intersection counts ``min(pa, pb)`` (the shared order picks a pixel tied in both maps in
    both as often as it can) and the result is ``I / (2k - I)`` with ``I = sum min(pa, pb)``
    (``2k - I = sum max(pa, pb)``: the fuzzy Jaccard index of the membership chances). It
    equals the plain IoU when neither map has ties at its cut, is 1 for a map with itself,
    and does not depend on the image's orientation (the former row-major rule made two maps
    flat over their top ``fraction`` overlap by construction).

    Parameters
    ----------
    a, b : ndarray, shape (H, W)
        Finite real values.
    fraction : float, default 0.1
        Share of the pixels in each set, in (0, 1].

    Returns
    -------
    float
        In ``[0, 1]``, 1 for the same set; 1 whenever ``fraction`` is 1.

    References
    ----------
    Jaccard, "The distribution of the flora in the alpine zone", New Phytologist 11, 1912
    (the index behind IoU).
    """
    x, y = _pair(a, b)
    frac = _fraction(fraction, "fraction")
    k = max(1, math.ceil(frac * x.size - 1e-9))
    pa, pb = top_k_share(x, k), top_k_share(y, k)
    return min(1.0, float(np.minimum(pa, pb).sum()) / float(np.maximum(pa, pb).sum()))
