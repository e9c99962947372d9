"""Which images the gallery draws: a bounded, stated selection, so the page does not grow with the data set.

Every image counts in the summary, the per-class tables, the plots and the verdict; only the
gallery is a selection of at most ``limit`` cards (``auditor run / report --gallery N``):

1. images whose map or primary metric is missing / undefined (a NaN map, a constant map), up to
   a quarter of the cards, in data set order;
2. for each method and primary metric: the worst ``k_worst`` and the best ``k_best`` images
   (ties broken by the other primary metrics, then data set order);
3. a seeded random sample of the rest fills the remaining cards.

One pass over the rows keeps only their primary metric values (``[M, methods x metrics]``
floats), so 50,000 rows cost a few MB; the chosen rows are read in a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .common import higher_is_better

DEFAULT_GALLERY = 60


@dataclass
class Selection:
    """``indices``: positions in the stream of scored rows, in selection order; ``reasons[i]``: why each is shown."""

    indices: list[int]
    reasons: dict[int, list[str]] = field(default_factory=dict)
    total: int = 0
    note: str = ""


def select_gallery(rows: Iterable[Mapping[str, Any]], methods: Sequence[str], primary: Sequence[str], *,
                   limit: int = DEFAULT_GALLERY, seed: int = 0) -> Selection:
    """Choose at most ``limit`` of the scored ``rows`` (``limit`` 0: none; negative: every row)."""
    groups = [(m, k) for m in methods for k in primary]
    values, problem = [], []
    for r in rows:
        mets = r.get("metrics") or {}
        values.append([_num(mets.get(m, {}).get(k)) for m, k in groups])
        problem.append(any(v for v in (r.get("map_status") or {}).values()))
    total = len(values)
    if limit < 0 or total <= limit:
        return Selection(list(range(total)), {}, total, f"Showing all {total} scored image{'' if total == 1 else 's'}")
    vals = np.asarray(values, dtype=float).reshape(total, len(groups))
    defined = np.isfinite(vals).any(axis=0)  # a method / metric with no value anywhere is not a problem per image
    bad = np.asarray(problem, dtype=bool) | (~np.isfinite(vals[:, defined])).any(axis=1)
    chosen: dict[int, list[str]] = {}

    def take(idx: Iterable[int], reason: str, budget: int) -> int:
        n = 0
        for i in idx:
            if n >= budget:
                break
            if int(i) not in chosen:
                chosen[int(i)] = [reason]
                n += 1
            elif reason not in chosen[int(i)]:
                chosen[int(i)].append(reason)
        return n

    n_bad = take(np.flatnonzero(bad), "missing or undefined map / metric", min(limit, max(1, limit // 4)))
    k_worst = max(1, limit // (3 * max(1, len(groups))))
    k_best = max(1, limit // (6 * max(1, len(groups))))
    for j, (method, metric) in enumerate(groups):
        if not defined[j] or len(chosen) >= limit:
            continue
        take(_order(vals, groups, j), f"{method} · {metric}: worst", min(k_worst, limit - len(chosen)))
        best = _order(vals, groups, j, best=True)
        take(best[np.isfinite(vals[best, j])], f"{method} · {metric}: best", min(k_best, limit - len(chosen)))
    rest = np.setdiff1d(np.arange(total), np.fromiter(chosen, dtype=int, count=len(chosen)))
    n_random = min(limit - len(chosen), len(rest))
    picked = np.sort(np.random.default_rng(seed).choice(rest, size=n_random, replace=False)) if n_random > 0 else []
    take(picked, f"random sample (seed {seed})", n_random)
    what = ", ".join(f"{m} · {k}" for m, k in groups)
    note = (f"Showing {len(chosen)} of {total} scored images, chosen as: {n_bad} with a missing or undefined map / "
            f"metric first; the worst {k_worst} and best {k_best} per method and primary metric ({what}); "
            f"{n_random} drawn at random (seed {seed})")
    return Selection(list(chosen), chosen, total, note)


def _order(vals: np.ndarray, groups: Sequence[tuple[str, str]], j: int, *, best: bool = False) -> np.ndarray:
    """Row indices worst (``best``: best) first by column ``j``, ties by the same method's other
    columns, then data set order; undefined values last."""
    method = groups[j][0]
    cols = [j] + [i for i, (m, _) in enumerate(groups) if m == method and i != j]
    keys = []
    for c in cols:
        sign = (1.0 if higher_is_better(groups[c][1]) else -1.0) * (-1.0 if best else 1.0)
        v = vals[:, c] * sign
        keys += [~np.isfinite(v), np.where(np.isfinite(v), v, 0.0)]  # undefined last, then the value
    return np.lexsort([np.arange(len(vals)), *reversed(keys)])  # lexsort: the last key is the primary one


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def pick(rows: Iterable[Mapping[str, Any]], indices: Sequence[int]) -> list[Mapping[str, Any]]:
    """The rows at ``indices`` (positions in ``rows``), in the order of ``indices``; one pass."""
    wanted = {i: n for n, i in enumerate(indices)}
    out: list[Any] = [None] * len(indices)
    for i, r in enumerate(rows):
        if i in wanted:
            out[wanted[i]] = r
    return out
