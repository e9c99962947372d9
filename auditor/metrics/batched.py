"""Every metric of one image's maps in one call: the values of the per-map functions, computed
with the references prepared once and one sort per map.

:func:`score_maps` takes the ``L`` maps of an image (each method's and the baselines, float32
``[L, H, W]``, as :class:`auditor.maps.PostProcess` returns them) and its references, and returns
``{metric: float64 [L]}`` for the metrics of the registries (:data:`~auditor.metrics.BOX_METRICS`,
``FIXATION_METRICS``, ``DENSITY_METRICS``), in their order. Each value equals, bit for bit, the
per-map function's on the same map (``tests/test_batched_metrics.py``): the per-map functions
call the same cores (:func:`~.localisation.hits_at_maximum`, :func:`~.gaze.judd_area`, ...) with
the same arrays; what is shared is only how those arrays are found:

* the map's float64 values, validated once for all ``L`` maps;
* one sort per map, of int64 keys that order like the float32 values (``-0 == +0``) and carry the
  mask and fixation bits in their two low bits: AUC-ROC's Mann-Whitney counts, the relevance
  rank's cut, and AUC-Judd's and AUC-Borji's sorted fixated / other values all read it (the
  per-map functions sort twice for AUC-ROC, twice for AUC-Judd, once for AUC-Borji and partition
  once for the relevance rank); a map whose order is known (the centre baseline, the same for
  every image of a size) passes it in ``orders`` and is not sorted at all;
* the references' parts (the centred gaze, the gaze as a distribution, AUC-Borji's random pixel
  draws, which depend only on the pixel and fixation counts) once per image.

A metric added to a registry that this module does not know is computed by its per-map function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import gaze, localisation
from ._validate import bool_mask, density

_MASK, _FIX = 1, 2  # the key's flag bits


def order_keys(values: np.ndarray) -> np.ndarray:
    """Integer keys ordered as the float32 ``values`` (any shape): ``a < b`` iff ``key(a) < key(b)``,
    ``-0.0`` and ``0.0`` share the key 0. Values without a sign bit (no negative value, no ``-0.0``)
    are their own keys (their bits, int32); others get int64 keys."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
    if (bits >= 0).all():
        return bits
    wide = bits.astype(np.int64)
    return np.where(wide < 0, -(wide & 0x7FFFFFFF), wide)


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float64 values of :func:`order_keys` keys (the key 0 is ``+0.0``)."""
    keys = np.asarray(keys, dtype=np.int64)
    bits = np.where(keys < 0, -keys | 0x80000000, keys).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


class _Sorted:
    """Map ``i``'s keys in increasing order (``keys[i]``) and the flag bits that travel with them.

    Keys of values in ``[0, 2)`` (every min-max normalised map) fit 30 bits: packed with the flags
    into uint32, which sorts about twice as fast as int64."""

    def __init__(self, keys: np.ndarray, flags: np.ndarray, orders: Sequence[np.ndarray | None]):
        if keys.dtype == np.int32 and (not keys.size or keys.max() < 1 << 30):  # >= 0: order_keys
            packed = keys.view(np.uint32) * np.uint32(4) + flags.astype(np.uint32)
        else:
            packed = keys.astype(np.int64) * 4 + flags
        out = np.empty_like(packed)
        for i, order in enumerate(orders):
            out[i] = np.sort(packed[i]) if order is None else packed[i][order]
        self.keys, self.flags = out >> 2, out & 3


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
    s = maps.astype(np.float64)
    ctx = _Context(s, m, f, g)
    if any(_BATCHED.get(fn) in _SORTED for _, fn, _ in wanted):
        ctx.keys = order_keys(maps).reshape(len(maps), ctx.n)
        flags = (0 if m is None else m.ravel() * _MASK) + (0 if f is None else f.ravel() * _FIX)
        ctx.sorted = _Sorted(ctx.keys, np.asarray(flags, dtype=np.int64), orders or [None] * len(maps))
    out = {}
    for name, fn, ref in wanted:
        one = _BATCHED.get(fn)
        out[name] = np.array([float(one(ctx, i)) if one else float(fn(s[i], ref)) for i in range(len(maps))])
    return out


class _Context:
    """One image's maps and prepared references; a method per metric, ``(map index) -> value``."""

    sorted: _Sorted
    keys: np.ndarray  # order_keys of the maps [L, N], with ``sorted``

    def __init__(self, s: np.ndarray, m: np.ndarray | None, f: np.ndarray | None, g: np.ndarray | None):
        self.s, self.m, self.f = s, m, f
        self.n = int(np.prod(s.shape[1:]))
        self._minmax: dict[int, tuple | None] = {}
        if g is not None:
            gc = None if gaze.is_constant(g) else gaze._centred(g)
            self.gc, self.gg = gc, (None if gc is None else float((gc * gc).sum()))
            self.g_dist, self.g_sim = gaze._to_distribution(g), gaze.similarity_distribution(g)
        if f is not None:
            self.n_fix = int(np.count_nonzero(f))
            self.draws = gaze.borji_draws(self.n, self.n_fix, 100, 0)  # auc_borji's defaults

    # box metrics
    def pointing_game(self, i: int) -> float:
        return localisation.hits_at_maximum(self.s[i], self.m)

    def relevance_mass(self, i: int) -> float:
        return localisation.positive_share(self.s[i], self.m)

    def relevance_rank(self, i: int) -> float:
        sk, k = self.sorted.keys[i], int(np.count_nonzero(self.m))
        cut = sk[max(self.n - k, 0)]
        above, upto = self.n - np.searchsorted(sk, cut, "right"), np.searchsorted(sk, cut, "left")
        return localisation.rank_share(self.keys[i][self.m.ravel()], k, self.n, cut, int(above),
                                       int(self.n - upto - above))

    def auc_roc(self, i: int) -> float:
        """Mann-Whitney counts from the sorted keys: for each run of equal values, its mask pixels
        times the background pixels below the run, and times the background pixels in it."""
        sk, inside = self.sorted.keys[i], (self.sorted.flags[i] & _MASK).astype(np.int64)
        p = int(inside.sum())
        if p == self.n:
            return float("nan")
        starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
        ends = np.append(starts[1:], self.n)
        cum_in = np.concatenate(([0], np.cumsum(inside)))
        cum_out = np.arange(self.n + 1) - cum_in
        run_in = cum_in[ends] - cum_in[starts]
        below = int((run_in * cum_out[starts]).sum())
        equal = int((run_in * (cum_out[ends] - cum_out[starts])).sum())
        return localisation.auc_from_counts(below, equal, p, self.n - p)

    # fixation metrics
    def nss(self, i: int) -> float:
        return gaze.standardised_at(self.s[i], self.f)

    def _normalised(self, i: int) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """Sorted min-max values, sorted fixation bits, min, max; None for a constant map."""
        if i not in self._minmax:
            sk = self.sorted.keys[i]
            if sk[0] == sk[-1]:
                self._minmax[i] = None
            else:
                v = key_values(sk)
                lo, hi = v[0], v[-1]
                self._minmax[i] = (v - lo) / (hi - lo), (self.sorted.flags[i] & _FIX).astype(bool), lo, hi
        return self._minmax[i]

    def auc_judd(self, i: int) -> float:
        got = self._normalised(i)
        return float("nan") if got is None else gaze.judd_area(got[0][got[1]], got[0][~got[1]])

    def auc_borji(self, i: int) -> float:
        got = self._normalised(i)
        if got is None or self.n_fix < 2:
            return float("nan")
        mm, fixated, lo, hi = got
        negatives = (self.s[i].ravel()[self.draws] - lo) / (hi - lo)
        return gaze.borji_area(mm[fixated], negatives, 0.1)

    # density metrics
    def cc(self, i: int) -> float:
        return float("nan") if self.gc is None else gaze.correlation(self.s[i], self.gc, self.gg)

    def kl_div(self, i: int) -> float:
        return gaze.divergence(self.s[i], self.g_dist)

    def sim(self, i: int) -> float:
        return gaze.intersection(self.s[i], self.g_sim)


#: per-map function -> its batched form (a registry entry replaced by another function is not batched)
_BATCHED = {localisation.pointing_game: _Context.pointing_game, localisation.relevance_mass: _Context.relevance_mass,
            localisation.relevance_rank: _Context.relevance_rank, localisation.auc_roc: _Context.auc_roc,
            gaze.nss: _Context.nss, gaze.auc_judd: _Context.auc_judd, gaze.auc_borji: _Context.auc_borji,
            gaze.cc: _Context.cc, gaze.kl_div: _Context.kl_div, gaze.sim: _Context.sim}
#: the batched forms that read the sorted values
_SORTED = frozenset({_Context.relevance_rank, _Context.auc_roc, _Context.auc_judd, _Context.auc_borji})
