"""Summaries over images: paired bootstrap CIs, a paired permutation test, Wilson intervals, ranks.

The percentile bootstrap itself (:func:`bootstrap_ci`, :func:`bootstrap_cis`,
:func:`cluster_bootstrap_ci`, :class:`Summary`) lives in :mod:`auditor.metrics.bootstrap` and is
re-exported here. All functions are seeded (``np.random.default_rng(seed)``): the same input and seed give
the same result on every machine with the same NumPy.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._validate import fraction, positive_int
from .bootstrap import Summary, _chunks, _vector, bootstrap_ci, bootstrap_cis, cluster_bootstrap_ci

__all__ = ["Summary", "bootstrap_ci", "bootstrap_cis", "cluster_bootstrap_ci", "paired_bootstrap_ci",
           "paired_permutation_test", "rank_average", "top_k_indices", "top_k_mask", "count_below", "wilson_ci",
           "is_binary"]

_EXACT_MAX_N = 16  # the permutation test enumerates all 2**n sign flips up to this n


def _paired_differences(a: Any, b: Any) -> np.ndarray:
    """``b - a``, NaN wherever either value is not finite."""
    x, y = _vector(a, "a"), _vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up one-to-one, got lengths {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return np.where(keep, y - x, np.nan)


def paired_bootstrap_ci(a: Any, b: Any, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                        clusters: Sequence[Any] = ()) -> Summary:
    """Mean paired difference ``b - a`` with a percentile-bootstrap CI.

    Pairs where either value is non-finite are dropped (counted in ``n_nan``); the
    remaining differences go through :func:`bootstrap_ci` (resampling pairs), or with
    ``clusters`` through :func:`cluster_bootstrap_ci` (resampling the clusters: few-shot
    pairs share their episode, and an image recurs across episodes).

    Parameters
    ----------
    a, b : array_like, shape (N,)
        The same images' values under two conditions (run A and run B), in the same order.
    n_boot, confidence, seed
        As in :func:`bootstrap_ci`.
    clusters : sequence of array_like, shape (N,) each
        Cluster labels of each pair (e.g. episodes, images); none: pairs are independent.

    Returns
    -------
    Summary
        Of ``b - a``. A CI that excludes 0 means B differs from A at that confidence.

    References
    ----------
    Efron & Tibshirani 1993 (as :func:`bootstrap_ci`).
    """
    diff = _paired_differences(a, b)
    if clusters:
        return cluster_bootstrap_ci(diff, *clusters, n_boot=n_boot, confidence=confidence, seed=seed)
    return bootstrap_ci(diff, n_boot=n_boot, confidence=confidence, seed=seed)


def paired_permutation_test(a: Any, b: Any, *, n_permutations: int = 10000, seed: int = 0,
                            clusters: Sequence[Any] = ()) -> float:
    """Two-sided p-value for ``mean(b - a) == 0`` by random sign flips of the differences.

    ``clusters``: cluster factors of the pairs (each shape ``(N,)``: few-shot episodes and
    images). Differences in one cluster are not independent, so a cluster's differences keep
    one sign together: the test runs on each factor's per-cluster sums, and the largest of
    those p-values is returned (crossed factors have no exact joint exchangeability; the
    largest is the conservative choice). Without it, 15 queries of one episode count as 15
    independent pieces of evidence and the p-value is far too small.

    Under the null hypothesis each difference ``d_i = b_i - a_i`` is symmetric around 0, so
    its sign is exchangeable. The statistic is ``T = |sum_i d_i|``; a flipped sample counts
    as at least as extreme when ``T* >= T - 1e-12 * sum_i |d_i|`` (floating-point slack).

    * ``n <= 16`` finite pairs: exact, over all ``2**n`` sign vectors,
      ``p = #{T* >= T} / 2**n``.
    * otherwise ``n_permutations`` random sign vectors, with the +1 correction of Phipson &
      Smyth: ``p = (1 + #{T* >= T}) / (1 + n_permutations)``, never 0.

    Parameters
    ----------
    a, b : array_like, shape (N,)
        Paired values; pairs where either is non-finite are dropped.
    n_permutations : int, default 10000
        Random sign vectors when ``n > 16``.
    seed : int, default 0
        Seed of ``np.random.default_rng``.

    Returns
    -------
    float
        In ``(0, 1]``; NaN when no finite pair is left. All differences 0 gives 1.

    References
    ----------
    Phipson & Smyth, "Permutation p-values should never be zero: calculating exact p-values
    when permutations are randomly drawn", Stat. Appl. Genet. Mol. Biol. 9(1), 2010.
    """
    n_permutations = positive_int(n_permutations, "n_permutations")
    d = _paired_differences(a, b)
    if clusters:
        ok = np.isfinite(d)
        sums = []
        for factor in clusters:
            labels = np.asarray(factor, dtype=object)
            if labels.shape != d.shape:
                raise ValueError(f"each cluster factor needs one label per pair ({d.size}), got {labels.shape}")
            _, index = np.unique(labels[ok].astype(str), return_inverse=True)
            sums.append(np.bincount(index.ravel(), weights=d[ok]) if ok.any() else np.array([]))
        return max(paired_permutation_test(np.zeros_like(s), s, n_permutations=n_permutations, seed=seed)
                   for s in sums)
    d = d[np.isfinite(d)]
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(float(d.sum()))
    slack = 1e-12 * float(np.abs(d).sum())
    if n <= _EXACT_MAX_N:
        bits = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1
        flipped = np.abs((1.0 - 2.0 * bits) @ d)
        return float(np.count_nonzero(flipped >= observed - slack) / flipped.size)
    rng = np.random.default_rng(seed)
    extreme = 0
    for rows in _chunks(n_permutations, n):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(rows, n))
        extreme += int(np.count_nonzero(np.abs(signs @ d) >= observed - slack))
    return (1.0 + extreme) / (1.0 + n_permutations)


def rank_average(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (any shape, flattened), ties given their average rank.

    The same as ``scipy.stats.rankdata(values.ravel(), method="average")``; O(n log n).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new_group = np.empty(x.size, dtype=bool)
    new_group[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], x.size)
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` largest values; ties broken by row-major (flat index) order.

    A stable sort of ``-values``: among equal values the one with the smaller flat index
    (earlier in row-major order, like ``np.argmax``) comes first.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    return np.argsort(-x, kind="stable")[:k]


def top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean flat mask of the pixels :func:`top_k_indices` returns, in O(n) (no full sort).

    The ``k``-th largest value ``t`` comes from a partition; every value above ``t`` is in,
    and of the values equal to ``t`` the first ones in row-major order fill the rest.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    k = min(max(int(k), 0), x.size)
    out = np.zeros(x.size, dtype=bool)
    if k == 0:
        return out
    t = np.partition(x, x.size - k)[x.size - k]
    np.greater(x, t, out=out)
    ties = np.flatnonzero(x == t)[: k - int(out.sum())]
    out[ties] = True
    return out


def count_below(sorted_values: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query, how many of ``sorted_values`` are ``< q`` and how many ``== q``."""
    lo = np.searchsorted(sorted_values, queries, side="left")
    return lo, np.searchsorted(sorted_values, queries, side="right") - lo


def wilson_ci(values: Any, *, confidence: float = 0.95) -> Summary:
    """Proportion of hits with the Wilson score interval, for binary values (0 / 1).

    A percentile bootstrap collapses to ``[1, 1]`` when every value is 1 (5 hits of 5); the
    Wilson interval does not: ``p = k / n``, ``z`` the normal quantile of ``(1 + confidence) / 2``,
    centre ``(p + z^2 / 2n) / (1 + z^2 / n)``, half-width
    ``z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)``. Non-finite values are dropped and
    counted in ``n_nan``; values other than 0 and 1 raise ValueError.

    Example: 5 of 5 -> ``[0.5655, 1.0]``; 0 of 5 -> ``[0.0, 0.4345]`` (z = 1.959964).

    References
    ----------
    Wilson, "Probable inference, the law of succession, and statistical inference", JASA 22
    (1927); Brown, Cai & DasGupta, "Interval estimation for a binomial proportion", Statist.
    Sci. 16 (2001), recommend it over the Wald and bootstrap intervals for small n.
    """
    from statistics import NormalDist

    confidence = fraction(confidence, "confidence")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    x = _vector(values, "values")
    finite = x[np.isfinite(x)]
    n, n_nan = int(finite.size), int(x.size - finite.size)
    if not np.isin(finite, (0.0, 1.0)).all():
        raise ValueError("wilson_ci takes binary values (0 or 1); use bootstrap_ci for other values")
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, n_nan)
    p = float(finite.mean())
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if p == 0 else max(0.0, centre - half)  # exact at the ends (no 1e-17 from rounding)
    hi = 1.0 if p == 1 else min(1.0, centre + half)
    return Summary(p, lo, hi, n, n_nan)


def is_binary(values: Any) -> bool:
    """True when every finite value is 0 or 1 (and there is at least one)."""
    x = _vector(values, "values")
    finite = x[np.isfinite(x)]
    return bool(finite.size) and bool(np.isin(finite, (0.0, 1.0)).all())
