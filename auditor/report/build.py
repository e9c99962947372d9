"""``render_report``: ``report.html`` from a finished audit, without a model.

Inputs are what ``auditor run`` wrote: ``results.json``, ``token_maps.npz`` (raw maps at
token resolution) and the original images (paths in the rows). The page holds: the verdict
and run settings, the method x metric summary beside the centre / random baselines, a
per-class breakdown (:mod:`.classes`), plots, the error rows, and a gallery of a bounded,
stated selection of images (:mod:`.selection`, ``gallery`` cards; pages of ``PAGE_SIZE``;
``loading="lazy"``). Rows are streamed (a :class:`~auditor.results.RowsFile` of 50,000 rows is
read a few times, never held), so the page and the memory do not grow with the data set.
"""

from __future__ import annotations

import math
from array import array
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import AuditorError, UsageError
from ..results import BASELINES, AuditResult
from . import plots
from .assets import INLINE_LIMIT_BYTES, AssetSink, colour_scale_css, load_picture
from .common import (DASH, as_result, class_name, fmt, fmt_ci, header, methods_of, metrics_of, row_class,
                     primary_metrics, sort_options, summary_table, worst_first)
from .classes import per_class_context, subset_for_plot
from .gallery import References, draw_cards, side_of
from .selection import DEFAULT_GALLERY, pick, select_gallery
from .faithfulness import faithfulness_context
from .leaderboard import leaderboard_context
from .templating import render_page

PAGE_SIZE = 50
ERRORS_SHOWN = 200  # error rows listed in the page; the rest are in results.csv


def render_report(results: str | Path | AuditResult, *, out: str | Path | None = None, cmap: str = "jet",
                  sort_by: str | None = None, style: str = "overlay",
                  inline_limit: int = INLINE_LIMIT_BYTES, gallery: int = DEFAULT_GALLERY) -> Path:
    """Write the HTML audit report and return its path.

    Args:
        results: ``results.json`` (its folder must hold ``token_maps.npz``) or an :class:`AuditResult`.
        out: the HTML file [default: ``report.html`` beside ``results.json``].
        cmap: overlay colormap (``jet``; ``cividis`` / ``viridis`` are colour-blind safe).
        sort_by: gallery order, ``"method.metric"`` worst first [default: the first method's
            pointing game, then relevance mass].
        style: ``"overlay"`` (upsampled heat map) or ``"grid"`` (one tint per patch).
        inline_limit: images are embedded while their total is at most this many bytes,
            else written to ``assets/`` beside the report.
        gallery: at most this many image cards (:func:`~auditor.report.selection.select_gallery`;
            negative: every image). The page states what it shows and how to draw any other image.
    """
    result = as_result(results)
    path = Path(out) if out is not None else result.out / "report.html"
    if path.is_dir():
        path = path / "report.html"
    data = result.data
    methods = methods_of(data)
    metrics = metrics_of(data["summary"])
    sink = AssetSink(path, inline_limit=inline_limit)
    side = side_of(result)
    try:
        context = {
            "title": f"Attention audit: {_model_name(data)}",
            "head": header(result),
            "summary": summary_table(data["summary"], methods, metrics, result.verdicts),
            "leaderboard": leaderboard_context(data["summary"], methods, metrics),
            **(classes := per_class_context(data, methods, metrics, result.verdicts)),
            "plots": _plots(data, methods, metrics, sink, classes["compact"]),
            "faithfulness": faithfulness_context(data, sink),
            "few_shot": few_shot_context(data.get("few_shot")),
            **error_rows(data["rows"]),
            "legend": {"css": colour_scale_css(cmap), "cmap": cmap},
            "maps_note": "" if side.maps.available else "token_maps.npz is missing: overlays are not drawn",
            "page_size": PAGE_SIZE,
        }
        context.update(_gallery(result, methods, metrics, side, sink, cmap, style, sort_by, gallery))
    finally:
        side.maps.close()
    context["storage"] = _storage(sink)
    return render_page("report.html.j2", path, **context)


def is_comparison(path: str | Path) -> bool:
    """Whether ``path`` is a compare's ``comparison.json`` (not an audit's ``results.json``)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            head = json.load(f)
    except (OSError, ValueError):
        return False  # render_report names the problem
    return isinstance(head, dict) and head.get("kind") == "attention-auditor comparison"


def rerender_comparison(path: str | Path, *, out: str | Path | None = None, cmap: str = "jet") -> Path:
    """Re-render a comparison's ``report.html`` from its ``comparison.json`` and A's / B's saved runs.

    ``out``: an ``.html`` file or a folder [default: ``report.html`` beside ``comparison.json``].
    """
    import json

    from ..compare import Comparison
    from .compare import render_comparison

    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    runs = []
    for side in ("a", "b"):
        rel = Path(str((data.get(side) or {}).get("results", "")))
        found = next((p for p in (rel, path.parent / side / "results.json") if p.is_file()), None)
        if found is None:
            raise UsageError(f"{path}: run {side.upper()}'s results ({rel}) are gone; the comparison's report "
                             "redraws from both runs' results.json and token_maps.npz")
        runs.append(as_result(found))
    target = Path(out) if out is not None else path.parent / "report.html"
    if target.suffix.lower() not in (".html", ".htm"):
        target = target / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    written = render_comparison(Comparison(data, target.parent), *runs, cmap=cmap)
    if written.name != target.name:
        written.replace(target)
    return target


def few_shot_context(fs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The few-shot section: accuracy over the episodes, and one line per episode."""
    if not fs:
        return None
    acc = fs["accuracy"]
    value = DASH if acc.get("mean") is None else f"{fmt(acc['mean'])} (95% CI {fmt_ci(acc)})"
    return {"headline": f"{fs['n_way']}-way {fs['k_shot']}-shot, {fs['n_query']} queries per class, seed {fs['seed']}: "
                        f"accuracy ({fs.get('decision', 'nearest prototype')}) {value} over {acc['n']} episode(s).",
            "prototype": fs.get("decision", "nearest prototype") == "nearest prototype",
            "episodes": [{"episode": e["episode"], "classes": ", ".join(e["classes"]), "queries": e["queries"],
                          "accuracy": fmt(e["accuracy"])} for e in fs["per_episode"]]}


def _model_name(data: Mapping[str, Any]) -> str:
    models = data["settings"].get("models") or []
    return ", ".join(str(m.get("name")) for m in models) or "model"


def error_rows(rows: Iterable[Mapping[str, Any]], shown: int = ERRORS_SHOWN) -> dict[str, Any]:
    """``errors``: the first ``shown`` error rows for the table; ``errors_total``: how many there are."""
    errors, total = [], 0
    for r in rows:
        if r.get("error"):
            total += 1
            if len(errors) < shown:
                errors.append({"id": str(r["id"]), "image": str(r.get("image") or DASH), "reason": str(r["error"])})
    return {"errors": errors, "errors_total": total}


def metric_values(rows: Iterable[Mapping[str, Any]], methods: Sequence[str], metrics: Sequence[str]
                  ) -> dict[str, dict[str, Sequence[float]]]:
    """``values[method][metric]``: the finite per-image values, for the plots (packed float64 arrays)."""
    out: dict[str, dict[str, array]] = {}
    for r in rows:
        for m in methods:
            for k in metrics:
                v = (r.get("metrics") or {}).get(m, {}).get(k)
                if v is not None and math.isfinite(v):
                    out.setdefault(m, {}).setdefault(k, array("d")).append(float(v))
    return out


def _plots(data: Mapping[str, Any], methods: Sequence[str], metrics: Sequence[str], sink: AssetSink,
           compact: Mapping[str, Any] | None = None) -> list[dict]:
    """The plots, each ``{title, img, alt, wide}``: one small figure per metric, the per-class chart
    (``wide``: scrolls sideways on a phone), then one figure per metric per layer."""
    every = [*methods, *[b for b in BASELINES if b in data["summary"]]]
    ok = (r for r in data["rows"] if not r.get("error"))
    out = []
    for metric, binary, png in plots.metric_panels(metric_values(ok, every, metrics), every, metrics, data["summary"]):
        what = ("the proportion of images where the map's peak is inside the reference, with its 95% CI"
                if binary else "box plots of the per-image values")
        out.append({"title": f"{metric} per method ({'proportion of hits' if binary else 'per-image values'})",
                    "img": sink.add(png, "png"), "wide": False,
                    "alt": f"{metric} for " + ", ".join(every) + f": {what}; the centre baseline dark grey, "
                           "the random baseline light grey."})
    metric = next((k for k in ("pointing_game", *primary_metrics(metrics)) if k in metrics), None)
    if metric and len(data.get("per_class") or {}) > 0:
        shown, which = subset_for_plot(data["per_class"], compact)
        png = plots.class_hit_rates(shown, every, metric)
        if png:
            out.append({"title": f"{metric} per class{which}", "img": sink.add(png, "png"), "wide": True,
                        "alt": f"Bar chart of the mean {metric} per class for " + ", ".join(every)
                               + ", with 95% confidence intervals; centre baseline dark grey, random light grey "
                                 "hatched."})
    for metric, png in plots.per_layer(data.get("per_layer") or {}, data["summary"]):
        out.append({"title": f"Which layer's attention agrees best with the annotation: {metric} per layer",
                    "img": sink.add(png, "png"), "wide": False,
                    "alt": f"Line chart of {metric} per layer (block index), with 95% confidence bands and the "
                           "centre baseline as a dashed line."})
    return out


def _sort_keys(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], metrics: Sequence[str],
               sort_by: str | None, as_given: str = "data set order") -> list[tuple[str, list[int]]]:
    def order(method: str, keys: Sequence[str]) -> list[int]:
        vals = [[(r.get("metrics") or {}).get(method, {}).get(k) for k in keys] for r in rows]
        return worst_first(vals, keys)

    keys: list[tuple[str, list[int]]] = []
    if sort_by:
        method, _, metric = sort_by.partition(".")
        if method not in methods or metric not in metrics:
            raise UsageError(f"cannot sort by '{sort_by}': give METHOD.METRIC with a method of "
                             f"{', '.join(methods)} and a metric of {', '.join(metrics)}")
        keys.append((f"{method} · {metric}, worst first", order(method, [metric])))
    if methods:
        primary = primary_metrics(metrics)
        lead = lead_method(rows, methods, primary)
        keys.append((f"{lead} · {' then '.join(primary)}, worst first", order(lead, primary)))
    for m in methods:
        for k in metrics:
            keys.append((f"{m} · {k}, worst first", order(m, [k])))
    keys.append((as_given, list(range(len(rows)))))
    seen, unique = set(), []
    for label, o in keys:
        if label not in seen:
            seen.add(label)
            unique.append((label, o))
    return unique


def lead_method(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], primary: Sequence[str]) -> str:
    """The first method with a defined value of the primary metric (a skipped / constant one sorts nothing)."""
    for m in methods:
        if primary and any(_finite((r.get("metrics") or {}).get(m, {}).get(primary[0])) for r in rows):
            return m
    return methods[0]


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def _gallery(result: AuditResult, methods, metrics, side, sink, cmap, style, sort_by, limit) -> dict[str, Any]:
    data = result.data
    primary = primary_metrics(metrics)
    chosen = select_gallery((r for r in data["rows"] if not r.get("error")), methods, primary, limit=limit,
                            seed=int(data["settings"].get("seed") or 0))
    rows = pick((r for r in data["rows"] if not r.get("error")), chosen.indices)
    why = [chosen.reasons.get(i, []) for i in chosen.indices]
    keys = _sort_keys(rows, methods, metrics, sort_by,
                      "data set order" if len(rows) == chosen.total else "as chosen (undefined, worst, best, random)")
    default = keys[0][1]
    rows = [rows[i] for i in default]  # the DOM holds the default order; the script re-sorts by index
    why = [why[i] for i in default]
    inverse = {old: new for new, old in enumerate(default)}
    options, orders = sort_options([(label, [inverse[i] for i in o]) for label, o in keys])
    lead = lead_method(rows, methods, primary) if methods else None
    refs = References(data["settings"], rows)  # the drawn rows' records only
    cards = draw_card_dicts(result, rows, side, sink, refs, lead=lead, metrics=metrics, cmap=cmap, style=style)
    for card, reasons in zip(cards, why):
        if reasons:
            card["caption"] = [*card["caption"], "shown as: " + "; ".join(reasons)]
    results_json = result.out / "results.json"
    return {"cards": cards, "sort_options": options, "orders": orders, "selection_note": chosen.note,
            "refs_note": refs.note,
            "show_command": f"auditor show ID --results {results_json}" if len(rows) < chosen.total else ""}


def draw_card_dicts(result: AuditResult, rows: Sequence[Mapping[str, Any]], side, sink: AssetSink,
                    refs: References, *, lead: str | None, metrics: Sequence[str], cmap: str, style: str
                    ) -> list[dict[str, Any]]:
    """The template's card dicts for ``rows`` (in order): images, caption, badges, metric table."""
    primary = primary_metrics(metrics)
    status = lambda label, method, row: (row.get("map_status") or {}).get(method, "")  # noqa: E731
    supports = SupportThumbs(refs, sink)
    return [{**images, **_card_text(result.data, row, lead, metrics, primary), "index": i,
             "support": [supports.get(s) for s in row.get("support") or []]}
            for i, (row, images) in enumerate(zip(rows, draw_cards(rows, [side], sink, refs=refs, base=result.out,
                                                                    cmap=cmap, style=style, map_note=status)))]


def _card_text(data, row, lead, metrics, primary) -> dict[str, Any]:
    rid = str(row["id"])
    target, pred = row.get("target"), row.get("prediction")
    caption = [f"label: {row.get('label_name') if row.get('label_name') is not None else class_name(data, row.get('label'))}",
               f"target: {row_class(data, row, 'target')}"]
    if row.get("episode") is not None:
        caption.append(f"episode {row['episode']}, support: {', '.join(map(str, row.get('support') or [])) or DASH}")
    badges = []
    if pred is not None:
        cosine = row.get("episode") is not None and (data.get("few_shot") or {}).get("decision") == "nearest prototype"
        score = f"{'cosine ' if cosine else ''}{fmt(row.get('prediction_score'), 2)}"
        caption.append(f"predicted: {row_class(data, row, 'prediction')} ({score})")
        right = pred == target
        badges.append({"text": "prediction = target" if right else "prediction ≠ target", "css": "pass" if right else "fail"})
    row_mets = row.get("metrics") or {}
    if lead and primary:
        v = row_mets.get(lead, {}).get(primary[0])
        if primary[0] == "pointing_game" and v is not None:
            word = "hit" if v >= 1 else "miss" if v <= 0 else f"{v:.2f} of the tied maxima hit"
            badges.append({"text": f"{lead}: {word}", "css": "pass" if v >= 1 else "fail"})
    shown = [k for k in metrics if any(k in row_mets.get(m, {}) for m in row_mets)]
    table = {"head": shown, "rows": [
        {"label": m, "baseline": m in BASELINES, "cells": [{"text": fmt(row_mets.get(m, {}).get(k)), "css": ""} for k in shown]}
        for m in row_mets]}
    return {"id": rid, "caption": caption, "badges": badges, "table": table, "path": str(row.get("image") or DASH)}


class SupportThumbs:
    """Few-shot support images as small thumbnails, each encoded once per report."""

    SIDE = 96

    def __init__(self, refs: References, sink: AssetSink):
        self.refs, self.sink, self._done = refs, sink, {}

    def get(self, image_id: str) -> dict[str, Any]:
        if image_id not in self._done:
            record, img = self.refs.records.get(image_id), None
            if record is not None:
                try:
                    img = self.sink.image(load_picture(record.image, self.SIDE).thumb)
                except (AuditorError, OSError):
                    pass
            self._done[image_id] = {"id": image_id, "img": img, "alt": f"support image {image_id}"}
        return self._done[image_id]


def _storage(sink: AssetSink) -> str:
    where = "embedded in this file" if sink.inline else f"in the folder {sink.folder.name}/ beside this file"
    return f"{sink.count} image{'' if sink.count == 1 else 's'} ({sink.total_bytes / 2**20:.1f} MiB) {where}"
