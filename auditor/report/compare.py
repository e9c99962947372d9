"""``auditor compare``: two checkpoints on the same images, one report, a regression gate.

``compare_results(a, b, out=...)`` reads two finished audits; ``compare_models`` first runs
:func:`auditor.runner.run_audit` into ``out/a`` and ``out/b``. Either writes
``out/comparison.json`` (paired deltas with CIs and p-values, map agreement per method,
per-image disagreement, gate verdicts), ``out/junit.xml`` (one case per ``--max-drop``
check, evaluated with :mod:`auditor.thresholds` with A as the baseline) and
``out/report.html`` (A and B side by side, the images where they disagree most first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UsageError
from ..results import AuditResult, write_json, write_junit
from ..thresholds import evaluate, parse_assignment
from . import paired, plots
from .assets import INLINE_LIMIT_BYTES, AssetSink, colour_scale_css
from .common import (DASH, as_result, fmt, fmt_ci, header, metrics_of, primary_metrics, sort_options, verdict_rows,
                     worst_first)
from .gallery import References, draw_cards, side_of
from .templating import render_page

COMPARISON_VERSION = "1.0"


@dataclass
class Comparison:
    data: dict[str, Any]
    out: Path

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])


def compare_models(data: str | Path, *, out: str | Path, model_a: Mapping[str, Any], model_b: Mapping[str, Any],
                   max_drop: Sequence[str] = (), cmap: str = "jet", report: bool = True, **run_kwargs: Any
                   ) -> Comparison:
    """Audit two models (``model_a`` / ``model_b``: ``run_audit`` keyword arguments such as
    ``arch``, ``factory``, ``checkpoint`` or ``model``) on ``data`` into ``out/a`` and ``out/b``,
    then compare them (:func:`compare_results`). ``run_kwargs`` apply to both runs."""
    from ..runner import run_audit

    for s in max_drop:  # bad syntax fails before the long runs
        parse_assignment(s, "max_drop")
    out = Path(out)
    res_a = run_audit(data, out=out / "a", **{**run_kwargs, **model_a})
    res_b = run_audit(data, out=out / "b", **{**run_kwargs, **model_b})
    return compare_results(res_a, res_b, out=out, max_drop=max_drop, cmap=cmap, report=report,
                           seed=run_kwargs.get("seed", 0))


def compare_results(results_a: str | Path | AuditResult, results_b: str | Path | AuditResult, *, out: str | Path,
                    max_drop: Sequence[str] = (), cmap: str = "jet", report: bool = True, seed: int = 0,
                    inline_limit: int = INLINE_LIMIT_BYTES) -> Comparison:
    """Compare two audits of the same images; see the module docstring. ``passed`` is the gate."""
    a, b = as_result(results_a), as_result(results_b)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    checks = [parse_assignment(s, "max_drop") for s in max_drop]
    from ..metrics import HIGHER_IS_BETTER

    verdicts = [v.to_dict() for v in evaluate(checks, b.data["summary"], None, a.data["summary"], HIGHER_IS_BETTER)]
    data = _comparison(a, b, verdicts, seed)
    write_json(out / "comparison.json", data)
    write_junit(out / "junit.xml", verdicts, suite="attention-auditor.compare")
    result = Comparison(data, out)
    if report:
        render_comparison(result, a, b, cmap=cmap, inline_limit=inline_limit)
    return result


def _comparison(a: AuditResult, b: AuditResult, verdicts: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    side_a, side_b = side_of(a, "A"), side_of(b, "B")
    methods = [m for m in side_a.methods if m in side_b.methods]
    if not methods:
        raise UsageError(f"A ({', '.join(side_a.methods)}) and B ({', '.join(side_b.methods)}) share no method: "
                         "run both audits with --methods set to the same names.")
    pairs, counts = paired.pair_rows(a.rows, b.rows)
    if not pairs:
        raise UsageError("A and B scored no image in common: compare two audits of the same data set.")
    metrics = [k for k in metrics_of(a.data["summary"]) if k in metrics_of(b.data["summary"])]
    images = []
    try:
        for ra, rb in pairs:
            shape = paired.image_shape(paired.resolve_pair_image(ra, rb, (a.out, b.out)))
            rid = str(ra["id"])
            agree = {m: paired.map_agreement(side_a.maps.get(m, rid), side_b.maps.get(m, rid), shape,
                                             side_a.normalization[m], side_b.normalization[m]) for m in methods}
            delta = {m: {k: _sub(ra, rb, m, k) for k in metrics} for m in methods}
            images.append({"id": rid, "disagreement": paired.disagreement(agree), "agreement": agree, "delta": delta})
    finally:
        side_a.maps.close()
        side_b.maps.close()
    images.sort(key=lambda img: (not math.isfinite(img["disagreement"]), -img["disagreement"]
                                 if math.isfinite(img["disagreement"]) else 0.0))  # most disagreement first (stable)
    return {
        "kind": "attention-auditor comparison", "version": COMPARISON_VERSION,
        "a": _run_info(a), "b": _run_info(b), "methods": methods, "metrics": metrics, "counts": counts,
        "deltas": paired.metric_deltas(pairs, methods, metrics, seed=seed),
        "agreement": paired.agreement_summary([img["agreement"] for img in images], methods, seed=seed),
        "images": images, "verdicts": verdicts, "passed": all(v["passed"] for v in verdicts),
    }


def _sub(ra, rb, m: str, k: str) -> float | None:
    va, vb = (r.get("metrics", {}).get(m, {}).get(k) for r in (ra, rb))
    return None if va is None or vb is None else float(vb) - float(va)


def _run_info(r: AuditResult) -> dict[str, Any]:
    fs = r.data.get("few_shot")
    return {"results": str(r.out / "results.json"), "models": r.data["settings"].get("models"), "passed": r.passed,
            **({"few_shot_accuracy": fs["accuracy"]} if fs else {})}


# -- the page -----------------------------------------------------------------------------

def render_comparison(comp: Comparison, a: AuditResult, b: AuditResult, *, cmap: str = "jet",
                      inline_limit: int = INLINE_LIMIT_BYTES) -> Path:
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
    context.update(_gallery(data, a, b, sink, cmap))
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
    pairs, _ = paired.pair_rows(a.rows, b.rows)
    va = {m: [] for m in methods}
    vb = {m: [] for m in methods}
    for ra, rb in pairs:
        for m in methods:
            x, y = (r.get("metrics", {}).get(m, {}).get(metric) for r in (ra, rb))
            if x is not None and y is not None:
                va[m].append(x)
                vb[m].append(y)
    png = plots.paired_scatter(va, vb, metric)
    if not png:
        return []
    return [{"title": f"{metric}: A against B, per image", "img": sink.add(png, "png"),
             "alt": f"Scatter plots of each image's {metric} under model A (x) and model B (y) for "
                    + ", ".join(methods) + "; points below the diagonal got worse in B."}]


def _gallery(data, a: AuditResult, b: AuditResult, sink: AssetSink, cmap: str) -> dict[str, Any]:
    methods, metrics = data["methods"], data["metrics"]
    images = data["images"]  # most disagreement first: the DOM order
    rows_a = {str(r["id"]): r for r in a.rows}
    rows_b = {str(r["id"]): r for r in b.rows}
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
        drawn = draw_cards(rows, [side_a, side_b], sink, refs=References(a.data["settings"].get("data")), base=a.out,
                           cmap=cmap, map_note=status)
        for i, (img, row, pics) in enumerate(zip(images, rows, drawn)):
            cards.append({**pics, **_card_text(img, row, rows_b[img["id"]], methods, metrics), "index": i})
    finally:
        side_a.maps.close()
        side_b.maps.close()
    return {"cards": cards, "sort_options": options, "orders": orders}


def _data_order(a: AuditResult, images) -> list[int]:
    pos = {str(r["id"]): i for i, r in enumerate(a.rows)}
    return sorted(range(len(images)), key=lambda i: pos.get(images[i]["id"], i))


def _card_text(img, ra, rb, methods, metrics) -> dict[str, Any]:
    rows = []
    for m in methods:
        for label, r in (("A", ra), ("B", rb)):
            rows.append({"label": f"{label}: {m}", "baseline": False,
                         "cells": [{"text": fmt(r.get("metrics", {}).get(m, {}).get(k)), "css": ""} for k in metrics]})
        rows.append({"label": f"B - A: {m}", "baseline": False, "cells": [_delta_cell(img["delta"][m][k], k) for k in metrics]})
    agree = "; ".join(f"{m}: Spearman {fmt(img['agreement'][m]['spearman'], 2)}, CC {fmt(img['agreement'][m]['cc'], 2)}, "
                      f"top-k {fmt(img['agreement'][m]['top_k_overlap'], 2)}" for m in methods)
    caption = [f"label: {ra.get('label_name') if ra.get('label_name') is not None else ra.get('label')}",
               f"predicted A: {ra.get('prediction')}, B: {rb.get('prediction')}", f"map agreement: {agree}"]
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


def format_comparison(data: Mapping[str, Any], *, top: int = 5) -> str:
    """A one-screen text summary: deltas with CIs and p-values, agreement, most-disagreeing images, the gate."""
    n = data['counts']['paired']
    lines = [f"{n} paired image{'' if n == 1 else 's'}; delta = B - A"]
    cells = [(f"{m}.{k}", f"{d['delta']:+.3f}", fmt_ci(d), f"p={_fmt_p(d['p_value'])}",
              "B WORSE" if d["worse"] else "B better" if d["better"] else "")
             for m, mets in data["deltas"].items() for k, d in mets.items()]
    widths = [max((len(c[i]) for c in cells), default=0) for i in range(4)]  # aligned columns across methods
    lines += ["  ".join(c[i].rjust(w) if i in (1, 2) else c[i].ljust(w) for i, w in enumerate(widths)).rstrip()
              + (f"  {c[4]}" if c[4] else "") for c in cells]
    for m, st in data["agreement"].items():
        lines.append(f"agreement {m}: Spearman {fmt(st['spearman'].get('mean'))}, CC {fmt(st['cc'].get('mean'))}, "
                     f"top-k {fmt(st['top_k_overlap'].get('mean'))}")
    if "few_shot_accuracy" in data["a"] and "few_shot_accuracy" in data["b"]:
        acc = [data[s]["few_shot_accuracy"] for s in ("a", "b")]
        lines.append(f"few-shot accuracy: A {fmt(acc[0]['mean'])} {fmt_ci(acc[0])}, B {fmt(acc[1]['mean'])} "
                     f"{fmt_ci(acc[1])} (over {acc[1]['n']} episodes)")
    worst = [f"{img['id']} ({fmt(img['disagreement'], 2)})" for img in data["images"][:top]]
    lines.append("most disagreement: " + ", ".join(worst))
    for v in data["verdicts"]:
        lines.append(f"{'PASS' if v['passed'] else 'FAIL'}  {v['name']}  ({v['reason']})")
    lines.append("PASSED" if data["passed"] else "FAILED")
    return "\n".join(lines)
