"""Shared report context: number formatting, metric direction, the header, summary tables,
worst-first orderings. Everything the templates show is computed here, as strings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..results import BASELINES, AuditResult

DASH = "–"


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display; None / NaN -> an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_ci(stat: Mapping[str, Any], digits: int = 3) -> str:
    if stat.get("ci_low") is None or stat.get("ci_high") is None:
        return DASH
    return f"[{fmt(stat['ci_low'], digits)}, {fmt(stat['ci_high'], digits)}]"


def higher_is_better(metric: str) -> bool:
    from ..metrics import HIGHER_IS_BETTER

    return bool(HIGHER_IS_BETTER.get(metric, True))


def arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def as_result(results: "str | Path | AuditResult") -> AuditResult:
    return results if isinstance(results, AuditResult) else AuditResult.load(results)


def methods_of(data: Mapping[str, Any]) -> list[str]:
    """The audited methods (settings order), then any other non-baseline method in the summary."""
    names = list(data["settings"].get("methods") or {})
    names += [m for m in data["summary"] if m not in names and m not in BASELINES]
    return [m for m in names if m in data["summary"]] or names


def metrics_of(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for mets in summary.values():
        seen += [k for k in mets if k not in seen]
    return sorted(seen)


def primary_metrics(metrics: Sequence[str]) -> list[str]:
    """The default worst-first key: pointing game, then relevance mass (ties), else the first metric."""
    keys = [m for m in ("pointing_game", "relevance_mass") if m in metrics]
    if not keys:
        keys = [m for m in ("nss", "cc", "auc_roc") if m in metrics][:1] or list(metrics[:1])
    return keys


def worst_first(values: Sequence[Sequence[float | None]], metrics: Sequence[str]) -> list[int]:
    """Indices sorted worst first by ``values[i][j]`` for ``metrics[j]`` (lexicographic); missing last."""
    def key(i: int) -> tuple:
        out: list[float] = []
        for v, metric in zip(values[i], metrics):
            if v is None or not math.isfinite(v):
                out += [1.0, 0.0]
            else:
                out += [0.0, v if higher_is_better(metric) else -v]
        return (*out, i)

    return sorted(range(len(values)), key=key)


def prediction_name(data: Mapping[str, Any], index: Any, model: int = 0) -> str:
    """A predicted class: the model's own class name when results.json records the model's
    classes (``settings.models[i].classes``), else as :func:`class_name`."""
    models = data["settings"].get("models") or []
    classes = (models[model].get("classes") if model < len(models) and isinstance(models[model], Mapping) else None) or []
    if isinstance(index, int) and 0 <= index < len(classes):
        return f"{classes[index]} ({index})"
    return class_name(data, index)


def row_class(data: Mapping[str, Any], row: Mapping[str, Any], key: str, model: int = 0) -> str:
    """A row's ``target`` or ``prediction`` with its name: the row's own ``<key>_name`` (the
    model's class name; a few-shot episode's data-set class), else :func:`prediction_name`."""
    index, name = row.get(key), row.get(f"{key}_name")
    if name is not None:
        return f"{name} ({index})"
    return prediction_name(data, index, model)


def class_name(data: Mapping[str, Any], index: Any) -> str:
    if index is None:
        return DASH
    classes = data["settings"].get("classes") or []
    if isinstance(index, int) and 0 <= index < len(classes):
        return f"{classes[index]} ({index})"
    return str(index)


def verdict_rows(verdicts: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Threshold verdicts, failed first."""
    rows = [{"name": v["name"], "status": "PASS" if v["passed"] else "FAIL", "css": "pass" if v["passed"] else "fail",
             "value": fmt(v.get("value"), 4), "reason": v.get("reason", "")} for v in verdicts]
    return sorted(rows, key=lambda r: r["status"] == "PASS")


def model_rows(models: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    out = []
    for m in models:
        ck = m.get("checkpoint") or {}
        kwargs = ", ".join(f"{k}={v}" for k, v in (m.get("kwargs") or {}).items())
        none = ("(none: the factory's own weights)" if ":" in str(m.get("name")) and "(" not in str(m.get("name"))
                else "(none: untrained, randomly initialised weights)")
        out.append({"name": str(m.get("name")), "kwargs": kwargs, "checkpoint": str(ck.get("path") or none),
                    "sha": (ck.get("sha256") or "")[:12], "sha_full": ck.get("sha256") or ""})
    return out


def header(result: AuditResult, *, label: str = "") -> dict[str, Any]:
    """Everything the header shows about one run."""
    data, s = result.data, result.data["settings"]
    pre = s.get("preprocessing") or {}
    size = pre.get("size")
    prep = ", ".join(p for p in (
        (f"resize to cover {pre['scale_size'][0]}x{pre['scale_size'][1]}, centre crop {size[0]}x{size[1]} "
         f"(crop_pct {pre.get('crop_pct')}; maps cover the framed crop)" if pre.get("resize") == "crop" and size
         else f"resize to {size[0]}x{size[1]}" if size else ""),
        f"{pre['interpolation']}" if pre.get("interpolation") else "",
        f"mean {tuple(round(v, 3) for v in pre['mean'])}" if pre.get("mean") else "",
        f"std {tuple(round(v, 3) for v in pre['std'])}" if pre.get("std") else "") if p)
    timing = data.get("timing") or {}
    return {
        "label": label, "passed": result.passed, "verdict": "PASS" if result.passed else "FAIL",
        "verdicts": verdict_rows(result.verdicts), "models": model_rows(s.get("models") or []),
        "data": str(s.get("data", DASH)), "counts": {k: str(v) for k, v in (data.get("counts") or {}).items()},
        "classes": ", ".join(map(str, s.get("classes") or [])) or DASH,
        "methods": [{"name": m, "normalization": str(p.get("normalization", DASH)),
                     "params": ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("normalization", "postprocess") and v is not None)}
                    for m, p in (s.get("methods") or {}).items()],
        "skipped": [{"name": k, "reason": str(v)} for k, v in (s.get("skipped_methods") or {}).items()],
        "preprocessing": prep or DASH, "target": str(s.get("target", DASH)),
        "versions": ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items()),
        "date": str(timing.get("started", DASH)), "seconds": fmt(timing.get("seconds"), 1) + " s",
        "results": str(result.out / "results.json"),
    }


def summary_table(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], methods: Sequence[str],
                  metrics: Sequence[str], verdicts: Iterable[Mapping[str, Any]] = (), cls: str | None = None
                  ) -> dict[str, Any]:
    """Rows = methods then baselines; a cell = mean, 95% CI, n, and the threshold checks on it."""
    checks: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for v in verdicts:
        if v.get("cls") == cls:
            checks.setdefault((v["method"], v["metric"]), []).append(v)
    centre = summary.get("centre", {})
    rows = []
    for method in [*methods, *[b for b in BASELINES if b in summary]]:
        cells = []
        for metric in metrics:
            st = summary.get(method, {}).get(metric)
            if st is None:
                cells.append({"mean": DASH, "ci": "", "n": "", "css": "na", "checks": [], "note": ""})
                continue
            mine = checks.get((method, metric), [])
            css = ("fail" if any(not v["passed"] for v in mine) else "pass") if mine else ""
            n = f"n={st['n']}" + (f" ({st['n_nan']} undefined)" if st.get("n_nan") else "")
            cells.append({"mean": fmt(st["mean"]), "ci": fmt_ci(st), "n": n, "css": css,
                          "checks": [{"name": v["name"], "status": "PASS" if v["passed"] else "FAIL"} for v in mine],
                          "note": "" if method in BASELINES else _vs_centre(st, centre.get(metric), metric)})
        rows.append({"method": method, "baseline": method in BASELINES, "cells": cells})
    return {"metrics": [{"name": m, "arrow": arrow(m)} for m in metrics], "rows": rows}


def _vs_centre(st: Mapping[str, Any], centre: Mapping[str, Any] | None, metric: str) -> str:
    """'not above centre' when the method's CI does not clear the centre baseline's mean."""
    if not centre or centre.get("mean") is None or st.get("ci_low") is None:
        return ""
    if higher_is_better(metric):
        return "" if st["ci_low"] > centre["mean"] else "not above centre"
    return "" if st["ci_high"] < centre["mean"] else "not below centre"


def sort_options(keys: Sequence[tuple[str, list[int]]]) -> tuple[list[dict[str, str]], dict[str, list[int]]]:
    """``[(label, order)]`` -> select options ``k0, k1 ...`` and ``{k: order}`` for the gallery script."""
    options = [{"key": f"k{i}", "label": label} for i, (label, _) in enumerate(keys)]
    return options, {f"k{i}": order for i, (_, order) in enumerate(keys)}


def resolve_image(path: str | None, base: Path) -> Path | None:
    """An image path from a row: as recorded, else relative to the results folder."""
    if not path:
        return None
    p = Path(path)
    for cand in (p, base / p) if not p.is_absolute() else (p,):
        if cand.is_file():
            return cand
    return None
