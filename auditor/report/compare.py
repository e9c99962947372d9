"""The comparison page: A and B side by side (:func:`render_comparison`), rendered from a
finished :class:`auditor.compare.Comparison` and both runs' saved results (never a model).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..results import AuditResult
from . import paired, plots
from .assets import INLINE_LIMIT_BYTES, AssetSink, colour_scale_css
from .common import DASH, row_class, fmt, fmt_ci, header, primary_metrics, sort_options, verdict_rows, worst_first
from .gallery import References, draw_cards, side_of
from .selection import DEFAULT_GALLERY
from .templating import render_page


# -- the page -----------------------------------------------------------------------------

def render_comparison(comp: Any, a: AuditResult, b: AuditResult, *, cmap: str = "jet",
                      inline_limit: int = INLINE_LIMIT_BYTES, gallery: int = DEFAULT_GALLERY) -> Path:
    """The comparison's ``report.html``; its gallery draws the ``gallery`` images where A and B
    disagree most (negative: every image), and says so."""
    data = comp.data
    path = comp.out / "report.html"
    methods, metrics = data["methods"], data["metrics"]
    sink = AssetSink(path, inline_limit=inline_limit)
    head_a, head_b = header(a, label="A"), header(b, label="B")
    gate = {"passed": data["passed"], "verdicts": verdict_rows(data["verdicts"]), "label": ""}
    context = {
        "title": f"Attention comparison: A {_names(a)} vs B {_names(b)}", "gate": gate, "head_a": head_a,
        "head_b": head_b, "counts": {k: str(v) for k, v in data["counts"].items()},
        "deltas": _delta_table(data["deltas"], methods, metrics), "agreement": _agreement_table(data["agreement"]),
        "plots": _plots(a, b, methods, metrics, sink), "legend": {"css": colour_scale_css(cmap), "cmap": cmap},
        "top_k": f"{paired.TOP_K:.0%}", "page_size": 50, "refs_note": "",
    }
    context.update(_gallery(data, a, b, sink, cmap, gallery))
    context["storage"] = f"{sink.count} images ({sink.total_bytes / 2**20:.1f} MiB) " + (
        "embedded in this file" if sink.inline else f"in the folder {sink.folder.name}/ beside this file")
    return render_page("compare.html.j2", path, **context)


def _names(r: AuditResult) -> str:
    return ", ".join(str(m.get("name")) for m in r.data["settings"].get("models") or []) or "model"


def _delta_table(deltas, methods, metrics) -> dict[str, Any]:
    rows = []
    for m in methods:
        cells = []
        for k in metrics:
            d = deltas.get(m, {}).get(k)
            if d is None:
                cells.append({"main": DASH, "sub": "", "p": "", "css": ""})
                continue
            css = "worse" if d["worse"] else "better" if d["better"] else ""
            cells.append({"main": f"{d['delta']:+.3f}", "sub": f"{fmt_ci(d)} · A {fmt(d['mean_a'])} → B {fmt(d['mean_b'])}",
                          "p": f"p = {_fmt_p(d['p_value'])} · n={d['n']}", "css": css,
                          "word": "B worse" if d["worse"] else "B better" if d["better"] else "no clear change"})
        rows.append({"method": m, "cells": cells})
    return {"metrics": metrics, "rows": rows}


def _fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return DASH
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _agreement_table(summary) -> list[dict[str, str]]:
    return [{"method": m, **{k: f"{fmt(st.get('mean'))} {fmt_ci(st)}" for k, st in measures.items()},
             "n": str(measures["spearman"].get("n", 0))} for m, measures in summary.items()]


def _plots(a: AuditResult, b: AuditResult, methods, metrics, sink) -> list[dict[str, Any]]:
    keys = primary_metrics(metrics)
    if not keys:
        return []
    metric = keys[-1]  # relevance mass rather than the binary pointing game, when both exist
    pairs, _ = paired.pair_rows(a.rows, b.rows, methods, [metric])
    va, vb = {}, {}
    for m in methods:
        x, y = pairs.values[(m, metric)]
        both = np.isfinite(x) & np.isfinite(y)
        va[m], vb[m] = x[both].tolist(), y[both].tolist()
    png = plots.paired_scatter(va, vb, metric)
    if not png:
        return []
    return [{"title": f"{metric}: A against B, per image", "img": sink.add(png, "png"),
             "alt": f"Scatter plots of each image's {metric} under model A (x) and model B (y) for "
                    + ", ".join(methods) + "; points below the diagonal got worse in B."}]


def _gallery(data, a: AuditResult, b: AuditResult, sink: AssetSink, cmap: str, limit: int) -> dict[str, Any]:
    methods, metrics = data["methods"], data["metrics"]
    images = data["images"]  # most disagreement first: the DOM order
    total = len(images)
    if 0 <= limit < total:
        images = images[:limit]
    wanted = {img["id"] for img in images}
    rows_a = {str(r["id"]): r for r in a.rows if str(r["id"]) in wanted}
    rows_b = {str(r["id"]): r for r in b.rows if str(r["id"]) in wanted}
    keys = [("A and B maps disagree most first (1 - Spearman)", list(range(len(images))))]
    for m in methods:
        for k in metrics:
            vals = [[img["delta"][m][k]] for img in images]
            keys.append((f"{m} · {k}: B's largest drop first", worst_first(vals, [k])))
    keys.append(("data set order", _data_order(a, images)))
    options, orders = sort_options(keys)
    side_a, side_b = side_of(a, "A"), side_of(b, "B")
    side_a.methods = side_b.methods = list(methods)
    rows = [rows_a[img["id"]] for img in images]
    status = lambda label, m, row: ((rows_a if label == "A" else rows_b)[str(row["id"])].get("map_status") or {}).get(m, "")  # noqa: E731
    cards = []
    try:
        drawn = draw_cards(rows, [side_a, side_b], sink, refs=References(a.data["settings"], rows), base=a.out,
                           cmap=cmap, map_note=status)
        for i, (img, row, pics) in enumerate(zip(images, rows, drawn)):
            cards.append({**pics, **_card_text(img, row, rows_b[img["id"]], methods, metrics, (a.data, b.data)),
                          "index": i})
    finally:
        side_a.maps.close()
        side_b.maps.close()
    note = (f"Showing all {total} paired images" if len(images) == total else
            f"Showing the {len(images)} of {total} paired images where A's and B's maps disagree most")
    return {"cards": cards, "sort_options": options, "orders": orders, "selection_note": note}


def _data_order(a: AuditResult, images) -> list[int]:
    pos = {str(r["id"]): i for i, r in enumerate(a.rows)}
    return sorted(range(len(images)), key=lambda i: pos.get(images[i]["id"], i))


def _card_text(img, ra, rb, methods, metrics, datas) -> dict[str, Any]:
    data_a, data_b = datas
    rows = []
    for m in methods:
        for label, r in (("A", ra), ("B", rb)):
            rows.append({"label": f"{label}: {m}", "baseline": False,
                         "cells": [{"text": fmt(r.get("metrics", {}).get(m, {}).get(k)), "css": ""} for k in metrics]})
        rows.append({"label": f"B - A: {m}", "baseline": False, "cells": [_delta_cell(img["delta"][m][k], k) for k in metrics]})
    agree = "; ".join(f"{m}: Spearman {fmt(img['agreement'][m]['spearman'], 2)}, CC {fmt(img['agreement'][m]['cc'], 2)}, "
                      f"top-k {fmt(img['agreement'][m]['top_k_overlap'], 2)}" for m in methods)
    caption = [f"label: {ra.get('label_name') if ra.get('label_name') is not None else ra.get('label')}",
               f"predicted A: {row_class(data_a, ra, 'prediction')}, B: {row_class(data_b, rb, 'prediction')}",
               f"map agreement: {agree}"]
    d = img["disagreement"]
    badges = [{"text": f"disagreement {fmt(d, 2)}", "css": "fail" if math.isfinite(d) and d > 1 else "note"}]
    return {"id": img["id"], "caption": caption, "badges": badges, "path": str(ra.get("image") or DASH),
            "table": {"head": list(metrics), "rows": rows}}


def _delta_cell(v: float | None, metric: str) -> dict[str, str]:
    from .common import higher_is_better

    if v is None or v == 0:
        return {"text": fmt(v), "css": ""}
    bad = (v < 0) == higher_is_better(metric)
    return {"text": f"{v:+.3f}", "css": "delta worse" if bad else "delta better"}
