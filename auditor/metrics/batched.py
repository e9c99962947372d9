"""Every metric of one image's maps in one call: the values of the per-map functions, computed
for all the maps at once with the references prepared once and one sort per map.

:func:`score_maps` takes the ``L`` maps of an image (each method's and the baselines, float32
``[L, H, W]``, as :class:`auditor.maps.PostProcess` returns them) and its references, and returns
``{metric: float64 [L]}`` for the metrics of the registries (:data:`~auditor.metrics.BOX_METRICS`,
``FIXATION_METRICS``, ``DENSITY_METRICS``), in their order. Each value equals, bit for bit, the
per-map function's on the same map (``tests/test_batched_metrics.py``). The maps are rows of one
float64 ``[L, N]`` array and every step is the per-map function's step along the rows:

* elementwise steps (``s - mean``, ``log``, ``np.maximum``, ...) compute each element as the
  per-map function does; a reduction along the last, contiguous axis (``sum``, ``mean``, ``std``)
  runs NumPy's pairwise summation over each row exactly as over the flat map, and ``min`` /
  ``max`` / counts are exact; a row whose metric is undefined (a constant map) is computed with
  the others and replaced by NaN;
* a step that cannot change a value is skipped: ``(x - 0.0) / 1.0`` (the min-max of a map already
  in ``[+0, 1]``, every :class:`~auditor.maps.PostProcess` map) and ``x / 1.0`` are ``x`` in IEEE
  arithmetic;
* one sort per map, of integer keys that order like the float32 values (``-0 == +0``) and carry
  the mask bit in their low bit: AUC-ROC's Mann-Whitney counts, the relevance rank's cut and
  AUC-Judd's count of pixels above each threshold read it (the per-map functions sort twice for
  AUC-ROC, twice for AUC-Judd and partition once for the relevance rank); a map whose order is
  known (the centre baseline, the same for every image of a size) passes it in ``orders`` and is
  only merge-sorted within its runs of equal values;
* the references' parts (the centred gaze, the gaze as a distribution, AUC-Borji's random pixel
  draws, which depend only on the pixel and fixation counts) once per image.

The few steps whose arrays differ in length from map to map (AUC-Judd's thresholds, AUC-Borji's
splits) call the per-map cores (:func:`~.gaze.judd_area`, :func:`~.gaze.borji_area`) map by map.
A metric added to a registry that this module does not know is computed by its per-map function.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from . import gaze, gaze_density, localisation
from ._validate import bool_mask, density, is_constant, non_negative


def order_keys(values: np.ndarray) -> np.ndarray:
    """Integer keys ordered as the float32 ``values`` (any shape): ``a < b`` iff ``key(a) < key(b)``,
    ``-0.0`` and ``0.0`` share the key 0. Values without a sign bit (no negative value, no ``-0.0``)
    are their own keys (their bits, int32); others get int64 keys."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
    if _signless(bits):
        return bits
    wide = bits.astype(np.int64)
    return np.where(wide < 0, -(wide & 0x7FFFFFFF), wide)


def _signless(bits: np.ndarray) -> bool:
    """No float32 of these bits (int32) has its sign bit set: no negative value, no ``-0.0``."""
    return bool(bits.size == 0 or bits.min() >= 0)


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float64 values of :func:`order_keys` keys (the key 0 is ``+0.0``)."""
    if keys.dtype == np.uint32 or (keys.dtype == np.int32 and (not keys.size or keys.min() >= 0)):  # their bits
        return np.ascontiguousarray(keys).view(np.float32).astype(np.float64)
    keys = np.asarray(keys, dtype=np.int64)
    bits = np.where(keys < 0, -keys | 0x80000000, keys).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


class _Sorted:
    """Map ``i``'s keys in increasing order (``keys[i]``) and, travelling with them in the key's low
    bit, whether each pixel is background (``outside[i]``): among equal values the mask pixels come
    first. Non-negative int32 keys (every map without a sign bit) pack into uint32, which sorts
    about twice as fast as int64.

    A row with a known order (an argsort of its values) is gathered in that order, which leaves
    only the runs of equal values to put mask-first: a stable (merge) sort of that nearly sorted row
    gives the same integers as sorting it from scratch, in a fraction of the time."""

    def __init__(self, keys: np.ndarray, outside: np.ndarray, orders: Sequence[np.ndarray | None]):
        if keys.dtype == np.int32:  # >= 0: order_keys
            packed = keys.view(np.uint32) * np.uint32(2) + outside.astype(np.uint32)
        else:
            packed = keys.astype(np.int64) * 2 + outside
        unknown = [i for i, order in enumerate(orders) if order is None]
        out = np.empty_like(packed)
        out[unknown] = np.sort(packed[unknown], axis=1)  # each row as np.sort of the row: same integers
        for i, order in enumerate(orders):
            if order is not None:
                out[i] = np.sort(packed[i][np.ravel(order)], kind="stable")
        self.keys, self.outside = out >> 1, (out & 1).astype(bool)


def score_maps(maps: np.ndarray, *, mask: np.ndarray | None = None, fixations: np.ndarray | None = None,
               gaze_map: np.ndarray | None = None, orders: Sequence[np.ndarray | None] | None = None,
               names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{metric: [L] float64}`` of the maps ``[L, H, W]`` (float32, finite) against the references.

    ``mask`` (boolean object mask) gives the box metrics, ``fixations`` (boolean) the fixation
    metrics, ``gaze_map`` (non-negative density) the density metrics, each ``[H, W]`` and validated
    as the per-map functions do (``ValueError``). ``orders[i]``: an ``argsort`` of map ``i``'s
    values when known (else None: the map is sorted here). ``names``: only these metrics.
    """
    from . import BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS

    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.dtype != np.float32:
        raise ValueError(f"maps must be float32 [L, H, W], got {maps.dtype} {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps have NaN or infinite values; replace them (e.g. np.nan_to_num) before scoring")
    shape = maps.shape[1:]
    refs = [(r, table) for r, table in ((mask, BOX_METRICS), (fixations, FIXATION_METRICS), (gaze_map, DENSITY_METRICS))
            if r is not None]
    wanted = [(name, fn, r) for r, table in refs for name, fn in table.items() if names is None or name in names]
    m = None if mask is None else bool_mask(mask, shape, "mask")
    f = None if fixations is None else bool_mask(fixations, shape, "fixations")
    g = None if gaze_map is None else density(gaze_map, shape, "gaze_map")
    if not len(maps):
        return {name: np.zeros(0) for name, _, _ in wanted}
    ctx = _Context(maps, m, f, g, orders or [None] * len(maps))
    out = {}
    with np.errstate(all="ignore"):  # rows of undefined maps (0 / 0) are computed, then set to NaN
        for name, fn, ref in wanted:
            batched = _BATCHED.get(fn)
            if batched is not None:
                out[name] = batched(ctx)
            else:
                out[name] = np.array([float(fn(si.reshape(shape), ref)) for si in ctx.s])
    return out


def _minus(a: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``a - lo[:, None]`` (rows); ``a`` itself when every ``lo`` is ``+0.0`` (``x - +0.0 == x``)."""
    if (lo == 0).all() and not np.signbit(lo).any():
        return a
    return a - lo[:, None]


def _over(a: np.ndarray, by: np.ndarray) -> np.ndarray:
    """``a / by[:, None]`` (rows); ``a`` itself when every ``by`` is 1 (``x / 1.0 == x``)."""
    return a if (by == 1).all() else a / by[:, None]


class _Context:
    """One image's maps as float64 rows ``s`` ``[L, N]`` and the prepared references (flat); a
    method per metric, returning its value for every map, float64 ``[L]``. Parts that several
    metrics read are computed once, when first needed."""

    def __init__(self, maps: np.ndarray, m: np.ndarray | None, f: np.ndarray | None, g: np.ndarray | None,
                 orders: Sequence[np.ndarray | None]):
        self.maps, self.orders = maps, orders
        self.n = int(np.prod(maps.shape[1:]))
        self.s = maps.reshape(len(maps), self.n).astype(np.float64)
        self.m = None if m is None else m.ravel()
        self.f = None if f is None else f.ravel()
        # pixel indices for ``take`` along the rows: C-ordered [L, K] (``a[:, mask]`` is Fortran-ordered,
        # and a row sum of that would not add in the per-map order)
        self.m_at = None if m is None else np.flatnonzero(self.m)
        self.f_at = None if f is None else np.flatnonzero(self.f)
        self.g = None if g is None else g.ravel()

    @functools.cached_property
    def lo(self) -> np.ndarray:
        """Each map's min, as the per-map functions' ``s.min()`` (float64: the same zero, ``-0.0`` or ``+0.0``)."""
        return self.s.min(1)

    @functools.cached_property
    def hi(self) -> np.ndarray:
        """Each map's max (of the float32 rows: the same value, half the bytes read; read where the sign
        of a zero cannot matter: comparisons, ``hi == 0``, ``hi + 0.0``)."""
        return self.maps.reshape(len(self.maps), self.n).max(1).astype(np.float64)

    @functools.cached_property
    def constant(self) -> np.ndarray:
        """bool ``[L]``: the maps whose values are all equal (``max == min``, :func:`~._validate.is_constant`)."""
        return self.hi == self.lo

    @functools.cached_property
    def sorted(self) -> _Sorted:
        outside = np.zeros(self.n, bool) if self.m is None else ~self.m
        return _Sorted(self.keys, outside, self.orders)

    @functools.cached_property
    def keys(self) -> np.ndarray:
        """:func:`order_keys` of the maps ``[L, N]``."""
        return order_keys(self.maps).reshape(len(self.maps), self.n)

    @functools.cached_property
    def centred(self) -> np.ndarray:
        """:func:`~.gaze_density._centred` of each map (NSS, CC)."""
        c = self.s - self.s.mean(1)[:, None]
        return c / np.abs(c).max(1)[:, None]

    # box metrics
    def pointing_game(self) -> np.ndarray:
        """:func:`~.localisation.hits_at_maximum` of each map (on the float32 values: the same maxima):
        the maxima's flat indices, counted per row (exact integer counts)."""
        rows = len(self.maps)
        top = np.flatnonzero(self.maps.reshape(rows, self.n) == self.hi.astype(np.float32)[:, None])  # few, as a rule
        row = top // self.n
        return np.bincount(row, self.m[top - row * self.n], rows) / np.bincount(row, None, rows)

    def relevance_mass(self) -> np.ndarray:
        """:func:`~.localisation.positive_share` of each map (``np.maximum(s, 0.0)`` is ``s`` when no
        value has a sign bit)."""
        positive = self.s if _signless(self.maps.view(np.int32)) else np.maximum(self.s, 0.0)
        total = positive.sum(1)
        share = np.minimum(1.0, positive.take(self.m_at, axis=1).sum(1) / total)
        return np.where(total == 0.0, np.nan, share)

    def relevance_rank(self) -> np.ndarray:
        """:func:`~.localisation.rank_share` of each map: the ``k``-th largest key from the sorted keys,
        each mask pixel's share of the top ``k`` (1 above the cut, the tied share at it)."""
        sk, k, n = self.sorted.keys, self.m_at.size, self.n
        if k >= n:
            return np.ones(len(sk))
        cut = sk[:, n - k]
        right = np.array([np.searchsorted(row, c, "right") for row, c in zip(sk, cut)])
        left = np.array([np.searchsorted(row, c, "left") for row, c in zip(sk, cut)])
        above, tied = n - right, right - left
        inside = self.keys.take(self.m_at, axis=1)
        share = (inside > cut[:, None]).astype(np.float64)
        share = np.where(inside == cut[:, None], ((k - above) / tied)[:, None], share)
        return np.minimum(1.0, share.sum(1) / k)

    def auc_roc(self) -> np.ndarray:
        """Mann-Whitney counts from the sorted keys, mask pixels first among equal values. ``below``
        (mask / background pairs in order): each mask pixel's background pixels before it in the
        sorted row, ``sum(positions) - p (p - 1) / 2``; ``equal``: for each run of equal values, its
        mask pixels times its background pixels (only runs longer than one are looked at)."""
        sk, n, rows = self.sorted.keys, self.n, len(self.sorted.keys)
        p = self.m_at.size
        if p == n:
            return np.full(rows, np.nan)
        at = np.flatnonzero(~self.sorted.outside).reshape(rows, p)  # every row has the p mask pixels
        below = at.sum(1) - np.arange(rows) * n * p - p * (p - 1) // 2
        equal = np.zeros(rows, np.int64)
        same = np.zeros(sk.shape, bool)  # same[:, j]: sk[:, j] == sk[:, j - 1]
        np.equal(sk[:, 1:], sk[:, :-1], out=same[:, 1:])
        if same.any():
            tied = same.copy()
            tied[:, :-1] |= same[:, 1:]
            idx = np.flatnonzero(tied)  # the pixels in runs longer than one, run after run
            starts = np.flatnonzero(~same.ravel()[idx])
            ends = np.append(starts[1:], idx.size)
            cum_in = np.concatenate(([0], np.cumsum(~self.sorted.outside.ravel()[idx])))
            run_in = cum_in[ends] - cum_in[starts]
            pairs = run_in * ((ends - starts) - run_in)
            equal += np.bincount(idx[starts] // n, pairs, rows).astype(np.int64)  # exact: integers below 2**53
        return (below.astype(np.float64) + equal.astype(np.float64) / 2.0) / (float(p) * (n - p))

    # fixation metrics
    def nss(self) -> np.ndarray:
        """:func:`~.gaze.standardised_at` of each map."""
        if self.constant.all():  # (a single pixel: no sample standard deviation)
            return np.full(len(self.s), np.nan)
        c = self.centred
        std = c.std(axis=1, ddof=1)
        return np.where(self.constant, np.nan, (c.take(self.f_at, axis=1) / std[:, None]).mean(1))

    @functools.cached_property
    def _range(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each map's min and max as its sorted keys give them (``-0.0`` reads ``+0.0``: ``x + 0.0``),
        and whether it is constant."""
        return self.lo + 0.0, self.hi + 0.0, self.constant

    @functools.cached_property
    def _fixated(self) -> np.ndarray:
        """The min-max normalised values at the fixations, each row sorted ``[L, F]``: the values the
        sorted keys give (``x + 0.0`` is ``x`` with ``-0.0`` read as ``+0.0``), normalised as the rows."""
        lo, hi, _ = self._range
        values = self.s.take(self.f_at, axis=1) + 0.0
        return np.sort(_over(_minus(values, lo), hi - lo), axis=1)

    def auc_judd(self) -> np.ndarray:
        """:func:`~.gaze.judd_curve` of each map: the other pixels above each threshold are all the
        pixels above it (the sorted normalised row) less the fixated ones."""
        lo, hi, flat = self._range
        n_others = self.n - self.f_at.size
        if n_others == 0 or flat.all():
            return np.full(len(flat), np.nan)
        everything = _over(_minus(key_values(self.sorted.keys), lo), hi - lo)  # sorted rows
        out = np.full(len(flat), np.nan)
        for i in np.flatnonzero(~flat):
            fixated = self._fixated[i]
            thresholds = np.unique(fixated)[::-1]
            above = n_others - (np.searchsorted(everything[i], thresholds, side="left")
                                - np.searchsorted(fixated, thresholds, side="left"))
            out[i] = gaze.judd_curve(fixated, thresholds, above, n_others)
        return out

    def auc_borji(self) -> np.ndarray:
        """:func:`~.gaze.borji_areas` of the maps: the fixated values and ``auc_borji``'s default draws
        (100 splits, seed 0, step 0.1), normalised with each map's min and max."""
        lo, hi, flat = self._range
        out = np.full(len(flat), np.nan)
        if self.f_at.size < 2 or flat.all():
            return out
        rows = ~flat
        negatives = self.s[rows].take(gaze.borji_draws(self.n, self.f_at.size, 100, 0), axis=1)  # [l, splits, F]
        negatives = _over(_minus(negatives.reshape(len(negatives), -1), lo[rows]), (hi - lo)[rows])
        out[rows] = gaze.borji_areas(self._fixated[rows], negatives.reshape(len(negatives), 100, -1), 0.1)
        return out

    # density metrics
    def cc(self) -> np.ndarray:
        """:func:`~.gaze_density.correlation` of each map with the centred gaze."""
        if is_constant(self.g):
            return np.full(len(self.s), np.nan)
        gc = gaze_density._centred(self.g)
        gg = float((gc * gc).sum())
        c = self.centred
        r = (c * gc).sum(1) / np.sqrt((c * c).sum(1) * gg)
        return np.where(self.constant, np.nan, np.minimum(1.0, np.maximum(-1.0, r)))

    def kl_div(self) -> np.ndarray:
        """:func:`~.gaze_density.divergence` of each map from the gaze distribution."""
        negative = self.lo < 0
        if negative.any():
            i = int(np.argmax(negative))
            non_negative(self.s[i], "saliency", "KL divergence needs a non-negative map: min-max normalise or ReLU it first")
        g = gaze_density._to_distribution(self.g)
        d = self._distribution(self.s, self.hi)
        d += gaze_density.EPS
        np.divide(g, d, out=d)
        d += gaze_density.EPS
        gaze_density.log_(d)
        d *= g
        return d.sum(1)

    @staticmethod
    def _distribution(a: np.ndarray, top: np.ndarray) -> np.ndarray:
        """:func:`~.gaze_density._to_distribution` of each row of ``a`` (non-negative, max ``top``):
        divided by its max, then by its sum; an all-zero row unchanged. A new array."""
        zero = top == 0
        d = _over(a, np.where(zero, 1.0, top))
        d = d / np.where(zero, 1.0, d.sum(1))[:, None]
        return d

    def sim(self) -> np.ndarray:
        """:func:`~.gaze_density.intersection` of each map with the gaze as SIM reads it."""
        g = gaze_density.similarity_distribution(self.g)
        if g is None:
            return np.full(len(self.s), np.nan)
        nonzero = self.s.any(1)
        mm = _over(_minus(self.s, self.lo), self.hi - self.lo)
        if not nonzero.all():  # an all-zero row is read as it is
            mm = np.where(nonzero[:, None], mm, self.s)
        # a min-max normalised row's max is (hi - lo) / (hi - lo) == 1.0 (rounding is monotone)
        d = self._distribution(mm, np.where(nonzero, 1.0, 0.0))
        value = np.minimum(1.0, np.minimum(d, g).sum(1))
        return np.where(self.constant & nonzero, np.nan, value)


#: per-map function -> its batched form (a registry entry replaced by another function is not batched)
_BATCHED = {localisation.pointing_game: _Context.pointing_game, localisation.relevance_mass: _Context.relevance_mass,
            localisation.relevance_rank: _Context.relevance_rank, localisation.auc_roc: _Context.auc_roc,
            gaze.nss: _Context.nss, gaze.auc_judd: _Context.auc_judd, gaze.auc_borji: _Context.auc_borji,
            gaze.cc: _Context.cc, gaze.kl_div: _Context.kl_div, gaze.sim: _Context.sim}
