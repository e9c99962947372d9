"""The report's method leaderboard: which maps to trust on this model.

Every audited method and the centre / random baselines in one table, sorted by localisation
(the primary metrics: pointing game, then relevance mass; for gaze data NSS or CC), each cell
the mean with its 95% CI, beside the faithfulness scores when they were measured (deletion /
insertion against a random pixel order: above 0 = better than chance). Each method carries two
readings: its localisation CI clears the centre baseline's mean (or not), and its faithfulness
CIs clear 0 (or not). Reads the summary only; shown when at least two methods were scored.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..results import BASELINES
from .common import DASH, arrow, fmt, fmt_ci, higher_is_better, primary_metrics

#: faithfulness columns, the first group of which any is in the summary (older results: raw areas)
FAITHFULNESS = (("deletion_vs_random", "insertion_vs_random"),
                ("deletion_auc_normalised", "insertion_auc_normalised"), ("deletion_auc", "insertion_auc"))
#: the faithfulness metrics read against chance: 0 = a random pixel order
VS_RANDOM = frozenset(FAITHFULNESS[0])


def localisation_metrics(metrics: Sequence[str]) -> list[str]:
    """The leaderboard's sort keys: the report's primary metrics among the box / gaze metrics."""
    from ..metrics import BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS

    return primary_metrics([m for m in metrics if m in {**BOX_METRICS, **FIXATION_METRICS, **DENSITY_METRICS}])


def faithfulness_metrics(metrics: Sequence[str]) -> list[str]:
    for group in FAITHFULNESS:
        present = [m for m in group if m in metrics]
        if present:
            return present
    return []


def leaderboard_context(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], methods: Sequence[str],
                        metrics: Sequence[str]) -> dict[str, Any] | None:
    """Template context of the leaderboard, or None with fewer than two scored methods.

    ``summary[method][metric]``: ``{mean, ci_low, ci_high, n, ...}`` (results.json's summary);
    ``methods``: the audited methods (baselines are added from the summary).
    """
    scored = [m for m in methods if m not in BASELINES and summary.get(m)]
    local, faith = localisation_metrics(metrics), faithfulness_metrics(metrics)
    keys = local or faith
    if len(scored) < 2 or not keys:
        return None
    rows = [*scored, *[b for b in BASELINES if b in summary]]
    rows.sort(key=lambda m: _sort_key(summary.get(m, {}), keys))
    centre = summary.get("centre", {})
    out, rank = [], 0
    for m in rows:
        baseline = m in BASELINES
        rank += 0 if baseline else 1
        stats = summary.get(m, {})
        out.append({"rank": DASH if baseline else str(rank), "method": m, "baseline": baseline,
                    "cells": [_cell(stats.get(k)) for k in [*local, *faith]],
                    "tags": [] if baseline else _tags(stats, centre, local[:1], faith)})
    columns = ([{"name": k, "arrow": arrow(k), "group": "localisation"} for k in local]
               + [{"name": k, "arrow": arrow(k), "group": "faithfulness"} for k in faith])
    return {"columns": columns, "rows": out, "sorted_by": " then ".join(keys),
            "n_local": len(local), "n_faith": len(faith)}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _sort_key(stats: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> tuple:
    """Best first on ``keys`` in turn (direction-aware); a method without a value sorts last."""
    out: list[float] = []
    for k in keys:
        v = (stats.get(k) or {}).get("mean")
        out += [1.0, 0.0] if not _finite(v) else [0.0, -v if higher_is_better(k) else v]
    return tuple(out)


def _cell(stat: Mapping[str, Any] | None) -> dict[str, str]:
    if not stat or not _finite(stat.get("mean")):
        return {"mean": DASH, "ci": ""}
    return {"mean": fmt(stat["mean"]), "ci": fmt_ci(stat)}


def _tags(stats: Mapping[str, Mapping[str, Any]], centre: Mapping[str, Mapping[str, Any]], local: Sequence[str],
          faith: Sequence[str]) -> list[dict[str, str]]:
    """Whether the method's 95% CI clears the centre baseline's mean (first localisation metric),
    and 0 on each faithfulness metric read against a random pixel order."""
    tags = []
    for k in local:
        st, ref = stats.get(k) or {}, (centre.get(k) or {}).get("mean")
        if not _finite(st.get("ci_low")) or not _finite(ref):
            continue
        ok = st["ci_low"] > ref if higher_is_better(k) else st["ci_high"] < ref
        tags.append({"text": f"{k}: {'above' if ok else 'not above'} centre", "css": "pass" if ok else "fail"})
    for k in faith:
        st = stats.get(k) or {}
        if k in VS_RANDOM and _finite(st.get("ci_low")):
            ok = st["ci_low"] > 0
            tags.append({"text": f"{k.split('_')[0]}: {'better' if ok else 'no better'} than a random order",
                         "css": "pass" if ok else "fail"})
    return tags
