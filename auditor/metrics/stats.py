"""Summaries over images: bootstrap confidence intervals, a paired permutation test, ranks.

All functions are seeded (``np.random.default_rng(seed)``): the same input and seed give
the same result on every machine with the same NumPy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ._validate import fraction, positive_int

_CHUNK_ELEMENTS = 1 << 20  # resampled values held at once (8 MiB of float64, 8 MiB of indices; same draws as one block)
_EXACT_MAX_N = 16  # the permutation test enumerates all 2**n sign flips up to this n


@dataclass(frozen=True)
class Summary:
    """Mean of the finite values with a percentile-bootstrap CI (see :func:`bootstrap_ci`).

    Attributes
    ----------
    mean : float
        Mean of the finite values (NaN when there are none).
    ci_low, ci_high : float
        The CI's bounds (NaN when ``n == 0``; equal to the value when ``n == 1``).
    n : int
        Number of finite values used.
    n_nan : int
        Number of values dropped (NaN, or +-inf).
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_nan: int

    def to_dict(self) -> dict[str, Any]:
        """``{"mean", "ci_low", "ci_high", "n", "n_nan"}`` as plain Python numbers (NaN kept)."""
        return asdict(self)


def _vector(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}; flatten it first")
    if a.dtype != bool and not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers or booleans, got dtype {a.dtype}")
    return a.astype(np.float64)


def _chunks(total: int, n: int) -> Iterator[int]:
    """Row counts that split ``total`` resamples of length ``n`` into bounded blocks."""
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, total, step):
        yield min(step, total - start)


def bootstrap_ci(values: Any, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Summary:
    """Mean with a percentile-bootstrap confidence interval.

    Non-finite values (NaN: the metric was undefined for that image) are dropped and counted
    in ``n_nan``. The CI is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles (``np.quantile``, linear interpolation) of the means of ``n_boot`` resamples
    of the ``n`` finite values drawn with replacement.

    Parameters
    ----------
    values : array_like, shape (N,)
        Per-image metric values; booleans count as 0 / 1 (a pointing-game hit rate).
    n_boot : int, default 2000
        Number of bootstrap resamples.
    confidence : float, default 0.95
        Coverage of the interval, in (0, 1).
    seed : int, default 0
        Seed of ``np.random.default_rng``.

    Returns
    -------
    Summary
        ``n == 0``: mean and CI are NaN. ``n == 1``: the CI is ``[value, value]``.

    References
    ----------
    Efron & Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall 1993, ch. 13
    (percentile interval).
    """
    n_boot = positive_int(n_boot, "n_boot")
    confidence = fraction(confidence, "confidence")
    if confidence >= 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    x = _vector(values, "values")
    finite = x[np.isfinite(x)]
    n, n_nan = int(finite.size), int(x.size - finite.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, n_nan)
    mean = float(finite.mean())
    if n == 1:
        return Summary(mean, mean, mean, 1, n_nan)
    rng = np.random.default_rng(seed)
    means = np.concatenate([finite[rng.integers(0, n, size=(rows, n))].mean(axis=1) for rows in _chunks(n_boot, n)])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Summary(mean, float(lo), float(hi), n, n_nan)


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


def cluster_bootstrap_ci(values: Any, *factors: Any, weights: Any = None, n_boot: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> Summary:
    """Weighted mean with a percentile CI of a bootstrap that resamples clusters, not values.

    Values in one cluster (the queries of one few-shot episode, which share its support set)
    are not independent; resampling them one by one understates the spread. Each resample
    draws, for every factor, as many clusters as it has, with replacement; a value's
    multiplicity ``m_i`` is the product over the factors of how often its cluster was drawn.
    The resample's statistic is ``sum(w_i m_i x_i) / sum(w_i m_i)``.

    * One factor (episodes): the cluster bootstrap (Davison & Hinkley 1997, sec. 3.8). With
      one value per cluster and no weights it is :func:`bootstrap_ci`, draw for draw.
    * Two crossed factors (episodes x images, since an image appears in several episodes):
      Owen's pigeonhole bootstrap; resamples in which no value is drawn (``sum(w m) == 0``)
      are left out of the quantiles.

    Non-finite values are dropped (counted in ``n_nan``) before the clusters are formed.

    Parameters
    ----------
    values : array_like, shape (N,)
        Per-row values; booleans count as 0 / 1.
    *factors : array_like, shape (N,)
        Cluster labels of each row (any hashable values), one array per factor; at least one.
    weights : array_like, shape (N,), optional
        Non-negative row weights (default 1). ``1 / size of the row's episode`` makes the
        estimate the mean of the episodes' means (FewTURE's reported accuracy).
    n_boot, confidence, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    Summary
        ``mean`` is ``sum(w x) / sum(w)``; ``n`` the finite values. ``n == 0``: NaN; a single
        cluster in every factor: the CI is ``[mean, mean]``.

    References
    ----------
    Davison & Hinkley, "Bootstrap Methods and their Application", CUP 1997, sec. 3.8.
    Owen, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2), 2007.
    """
    n_boot = positive_int(n_boot, "n_boot")
    confidence = fraction(confidence, "confidence")
    if confidence >= 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not factors:
        raise ValueError("cluster_bootstrap_ci needs at least one array of cluster labels "
                         "(e.g. the episode of each row)")
    x = _vector(values, "values")
    w = np.ones_like(x) if weights is None else _vector(weights, "weights")
    codes = []
    for f in factors:
        f = np.asarray(f, dtype=object)
        if f.shape != x.shape:
            raise ValueError(f"each factor needs one cluster label per value ({x.size}), got shape {f.shape}")
        codes.append(f)
    if w.shape != x.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {x.size} finite non-negative numbers, one per value")
    keep = np.isfinite(x)
    x, w, n_nan = x[keep], w[keep], int(x.size - keep.sum())
    codes = [np.unique(f[keep].astype(str), return_inverse=True)[1].ravel() for f in codes]
    n = int(x.size)
    if n == 0 or w.sum() == 0:
        return Summary(math.nan, math.nan, math.nan, n, n_nan)
    mean = float((w * x).sum() / w.sum())
    sizes = [int(c.max()) + 1 for c in codes]
    if n == 1 or all(g == 1 for g in sizes):
        return Summary(mean, mean, mean, n, n_nan)
    rng = np.random.default_rng(seed)
    stats = []
    for rows in _chunks(n_boot, max(sizes) if len(codes) == 1 else n):
        if len(codes) == 1:  # sums of whole clusters: the drawn clusters' totals, as bootstrap_ci draws values
            idx = rng.integers(0, sizes[0], size=(rows, sizes[0]))
            top = np.bincount(codes[0], weights=w * x, minlength=sizes[0])[idx].sum(axis=1)
            bottom = np.bincount(codes[0], weights=w, minlength=sizes[0])[idx].sum(axis=1)
        else:
            m = np.ones((rows, n))
            for c, g in zip(codes, sizes):
                counts = np.zeros((rows, g))
                np.add.at(counts, (np.arange(rows)[:, None], rng.integers(0, g, size=(rows, g))), 1.0)
                m *= counts[:, c]
            top, bottom = m @ (w * x), m @ w
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan))
    means = np.concatenate(stats)
    means = means[np.isfinite(means)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Summary(mean, float(lo), float(hi), n, n_nan)
