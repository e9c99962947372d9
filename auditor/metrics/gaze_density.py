"""Gaze-density metrics (CC, KL divergence, SIM), following the MIT Saliency Benchmark's code.

The saliency map is compared with a non-negative gaze density ``gaze_map`` ``[H, W]`` (not all
zero) of the same shape; the conventions (zeros, NaN for a constant map, references) are those
of :mod:`auditor.metrics.gaze`, which re-exports every name here. The helpers that put a map in
the form a metric reads (:func:`_centred`, :func:`_minmax`, :func:`_to_distribution`) live here
and serve the fixation metrics too.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import density, is_constant, non_negative, real_map, same_shape

EPS = 2.2204e-16  # MATLAB's eps as written in KLdiv.m


def _with_density(saliency: object, gaze_map: object) -> tuple[np.ndarray, np.ndarray]:
    s = real_map(saliency, "saliency")
    return s, density(gaze_map, s.shape, "gaze_map")


def _centred(a: np.ndarray) -> np.ndarray:
    """``a - mean(a)`` scaled to max ``|.|`` 1 (a non-constant ``a``), so that sums of squares
    neither underflow (values ~1e-170) nor overflow; NSS and CC do not depend on the scale."""
    c = a - a.mean()
    return c / np.abs(c).max()


def _minmax(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def _to_distribution(a: np.ndarray) -> np.ndarray:
    """``a / sum(a)`` when ``a`` has a non-zero value, else ``a`` unchanged (MIT's ``if any(map(:))``).

    ``a`` is non-negative here; it is divided by its maximum first so the sum cannot overflow."""
    if not a.any():
        return a
    a = a / a.max()
    return a / a.sum()


def cc(saliency: np.ndarray, gaze_map: np.ndarray) -> float:
    """Pearson's linear correlation coefficient of two maps.

    ``CC = sum(Sz * Gz) / sqrt(sum(Sz**2) sum(Gz**2))`` with ``Sz``, ``Gz`` the maps minus
    their means -- the same as MIT ``CC.m`` (``corr2`` of the standardised maps). Also used
    to compare two saliency maps (:mod:`auditor.metrics.agreement`), so the second map is
    only required to be finite and real, not a density. Zeros: values as they are, the same
    for every map.

    Parameters
    ----------
    saliency, gaze_map : ndarray, shape (H, W)
        Finite real maps (``gaze_map`` a gaze density, or a second saliency map).

    Returns
    -------
    float
        In ``[-1, 1]``, higher is better; NaN when either map is constant.

    References
    ----------
    Le Meur, Le Callet & Barba, "Predicting visual fixations on video based on low-level
    visual features", Vision Research 47, 2007. MIT ``CC.m`` (Bylinskii et al. 2019).
    """
    s = real_map(saliency, "saliency")
    g = real_map(gaze_map, "gaze_map")
    same_shape(s.shape, g, "gaze_map")
    if is_constant(g):
        return math.nan
    gc = _centred(g)
    return correlation(s, gc, float((gc * gc).sum()))


def correlation(s: np.ndarray, gc: np.ndarray, gg: float) -> float:
    """CC of a validated float64 map with a non-constant map already centred, ``gc``
    (:func:`_centred`), whose sum of squares is ``gg``."""
    if is_constant(s):
        return math.nan
    s = _centred(s)
    r = float((s * gc).sum() / math.sqrt(float((s * s).sum()) * gg))
    return min(1.0, max(-1.0, r))


def kl_div(saliency: np.ndarray, gaze_map: np.ndarray) -> float:
    """KL divergence of the gaze distribution from the saliency distribution.

    As MIT ``KLdiv.m``: each map divided by its sum (an all-zero map is left as zeros), then
    ``KL = sum(G * log(eps + G / (S + eps)))`` with ``eps = 2.2204e-16``.

    Zeros, the same for every map: an exact 0 in ``S`` where the gaze has mass costs
    ``G * log(G / eps)`` (about ``36 G``), MIT's epsilon and nothing more; no map gets a
    floor. A min-max normalised map has exact zeros at its minimum (ReLU'd maps many), and
    the audit's baselines go through the same min-max, so they are charged alike.

    Parameters
    ----------
    saliency, gaze_map : ndarray, shape (H, W)
        Non-negative maps (a negative saliency value raises ``ValueError``: min-max or ReLU
        the map first); ``gaze_map`` not all zero. An all-zero saliency map scores what MIT's
        code gives, a large finite value (about ``log(1 / eps) = 36``), not NaN.

    Returns
    -------
    float
        ``>= 0`` up to ``eps``, LOWER is better (0 when the two distributions are equal).

    References
    ----------
    Kullback & Leibler, "On information and sufficiency", Ann. Math. Stat. 22, 1951. MIT
    ``KLdiv.m`` (Bylinskii et al. 2019).
    """
    s, g = _with_density(saliency, gaze_map)
    return divergence(s, _to_distribution(g))


def divergence(s: np.ndarray, g: np.ndarray) -> float:
    """KL of a validated float64 map from a gaze distribution ``g`` (:func:`_to_distribution`)."""
    non_negative(s, "saliency", "KL divergence needs a non-negative map: min-max normalise or ReLU it first")
    s = _to_distribution(s)
    return float((g * log_(EPS + g / (s + EPS))).sum())


def log_(a: np.ndarray) -> np.ndarray:
    """The natural log of the float64 array ``a``, in place (``a`` returned): torch's vectorised
    log (SLEEF, within 1 ulp), 2.4x NumPy's on an AVX2 CPU, where NumPy's float64 log has no
    SIMD loop; KL divergence takes one log per pixel and map. Both KL paths (this module's and
    :mod:`.batched`) call it, so they agree bit for bit."""
    import torch  # (the metrics import no torch otherwise)

    torch.from_numpy(a).log_()
    return a


def sim(saliency: np.ndarray, gaze_map: np.ndarray) -> float:
    """Similarity (histogram intersection) of the two maps as distributions.

    As MIT ``similarity.m``: each map that is not all zero is min-max normalised to
    ``[0, 1]`` and divided by its sum (an all-zero map is left as zeros), then
    ``SIM = sum(min(S, G))``. So an all-zero saliency map scores 0, and a constant non-zero
    map -- of either side -- gives NaN, as MIT's code (its min-max divides by 0 and it
    returns ``nan`` when a map is all NaN). Zeros: values as they are, the same for every map.

    Parameters
    ----------
    saliency, gaze_map : ndarray, shape (H, W)
        Finite real map; non-negative density, not all zero.

    Returns
    -------
    float
        In ``[0, 1]``, higher is better (1 when the distributions are equal); NaN when
        either map is constant and not zero.

    References
    ----------
    Swain & Ballard, "Color indexing", IJCV 7, 1991. MIT ``similarity.m`` (Bylinskii et al.
    2019).
    """
    s, g = _with_density(saliency, gaze_map)
    return intersection(s, similarity_distribution(g))


def similarity_distribution(a: np.ndarray) -> np.ndarray | None:
    """A map as SIM reads it (min-max, then divided by its sum; all zeros left as they are),
    or None when it is constant and not zero (SIM is then NaN)."""
    if a.any() and is_constant(a):
        return None
    return _to_distribution(_minmax(a)) if a.any() else a


def intersection(s: np.ndarray, g: np.ndarray | None) -> float:
    """SIM of a validated float64 map with a gaze map as :func:`similarity_distribution` gives it."""
    s = similarity_distribution(s)
    if s is None or g is None:
        return math.nan
    return min(1.0, float(np.minimum(s, g).sum()))
