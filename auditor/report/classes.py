"""The per-class section: a full summary table per class for a few classes, one sortable,
filterable line per class for many (ImageNet's 1,000 stay readable: worst and best first,
the rest behind a filter box that runs in the page, no server).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from ..results import BASELINES
from .common import fmt, fmt_ci, higher_is_better, primary_metrics, summary_table

DETAILS_LIMIT = 50  # up to this many classes: one <details> table each
SHOWN = 20  # above it: the worst and the best SHOWN classes are listed, the others on filtering


def class_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Scored images per class (``label_name``), one pass."""
    counts: dict[str, int] = {}
    for r in rows:
        if not r.get("error") and r.get("label_name") is not None:
            counts[str(r["label_name"])] = counts.get(str(r["label_name"]), 0) + 1
    return counts


def per_class_context(data: Mapping[str, Any], methods: Sequence[str], metrics: Sequence[str],
                      verdicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"tables": [...]}`` (few classes) or ``{"compact": {...}}`` (many): see the module docstring."""
    per_class = data.get("per_class") or {}
    counts = class_counts(data["rows"])
    failed_classes = {str(v.get("cls")) for v in verdicts if v.get("cls") is not None and not v["passed"]}
    if len(per_class) <= DETAILS_LIMIT:
        tables = []
        for cls, summ in per_class.items():
            table = summary_table(summ, methods, metrics, verdicts, cls=cls)
            failed = any(c["css"] == "fail" for row in table["rows"] for c in row["cells"])
            tables.append({"cls": cls, "n": str(counts.get(cls, 0)), "table": table, "failed": failed})
        return {"tables": tables, "compact": None}
    return {"tables": [], "compact": compact_table(per_class, counts, methods, metrics, failed_classes)}


def compact_table(per_class: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]], counts: Mapping[str, int],
                  methods: Sequence[str], metrics: Sequence[str], failed: set[str] = frozenset()) -> dict[str, Any]:
    """One line per class, worst first by the lead method's primary metric; the worst and best
    ``SHOWN`` lines are visible (``shown``), the others appear when the filter matches them."""
    primary = primary_metrics(metrics)[:1]
    cols = [(m, k) for m in [*methods, *[b for b in BASELINES if any(b in s for s in per_class.values())]]
            for k in primary]
    lead = cols[0] if cols else None

    def key(cls: str) -> tuple:
        st = (per_class[cls].get(lead[0], {}).get(lead[1]) or {}) if lead else {}
        v = st.get("mean")
        if v is None or not math.isfinite(v):
            return (1, 0.0, cls)
        return (0, v if higher_is_better(lead[1]) else -v, cls)

    order = sorted(per_class, key=key)
    visible = set(order[:SHOWN]) | set(order[-SHOWN:])
    rows = []
    for rank, cls in enumerate(order, 1):
        cells = []
        for m, k in cols:
            st = per_class[cls].get(m, {}).get(k)
            cells.append({"text": fmt(st.get("mean")) if st else "–", "title": fmt_ci(st) if st else ""})
        rows.append({"rank": str(rank), "cls": cls, "n": str(counts.get(cls, 0)), "cells": cells,
                     "shown": cls in visible, "failed": cls in failed})
    return {"head": [f"{m} · {k}" for m, k in cols], "rows": rows, "total": str(len(order)), "shown": str(SHOWN),
            "order": f"{lead[0]} · {lead[1]}, worst first" if lead else "class name"}


def subset_for_plot(per_class: Mapping[str, Any], table: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The classes the per-class chart draws: every class, or the compact table's visible ones (worst and best)."""
    if not table:
        return dict(per_class), ""
    names = [r["cls"] for r in table["rows"] if r["shown"]]
    return {c: per_class[c] for c in names}, f" (the worst and best {table['shown']} of {table['total']} classes)"
