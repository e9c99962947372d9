"""``auditor compare``: two checkpoints on the same images, a paired regression gate, one report.

``compare_results(a, b, out=...)`` compares two finished audits; ``compare_models`` first
validates both audits (both models, both checkpoints, every threshold: a typo in B fails
before A runs), then runs them into ``out/a`` and ``out/b``. Either writes
``out/comparison.json`` (paired deltas with CIs and p-values, map agreement per method,
per-image disagreement, gate verdicts), ``out/junit.xml`` and ``out/report.html``.

The gate (:mod:`auditor.gate`) is paired: a ``--max-drop`` check is judged on the mean of
``A - B`` over the images both runs scored (the same pairs and numbers the deltas table
shows), B's own ``--thresholds`` / ``--fail-under`` checks on B's summary, B's error rows
against ``--max-errors``. Two runs whose data, target or preprocessing differ are refused
(:mod:`auditor.identity`) unless ``allow_different_data``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import UsageError
from .gate import GateOptions, evaluate, split_error_checks, validate_checks
from .identity import check_same_data
from .report import paired
from .report.assets import INLINE_LIMIT_BYTES
from .report.common import as_result, fmt, metrics_of
from .report.gallery import side_of
from .results import AuditResult, StreamedList, write_json, write_junit
from .thresholds import Check, load_thresholds, parse_assignment

COMPARISON_VERSION = "1.1"


@dataclass
class Comparison:
    data: dict[str, Any]
    out: Path

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])


def _b_checks(max_drop: Sequence[str], thresholds: str | Path | None, fail_under: Sequence[str],
              max_errors: int | None) -> tuple[list[Check], list[Check], int]:
    """(B's own checks, the paired drop checks, the allowed error rows), parsed."""
    own = load_thresholds(thresholds) if thresholds else []
    own += [parse_assignment(s, "min") for s in fail_under]
    own, errors = split_error_checks(own, max_errors)
    drops = [c for c in own if c.kind == "max_drop"] + [parse_assignment(s, "max_drop") for s in max_drop]
    return [c for c in own if c.kind != "max_drop"], drops, errors


def compare_models(data: str | Path, *, out: str | Path, model_a: Mapping[str, Any], model_b: Mapping[str, Any],
                   max_drop: Sequence[str] = (), thresholds: str | Path | None = None, fail_under: Sequence[str] = (),
                   max_nan: int = 0, max_errors: int | None = None, gate_on: str = "mean", cmap: str = "jet",
                   report: bool = True, **run_kwargs: Any) -> Comparison:
    """Audit two models (``model_a`` / ``model_b``: ``run_audit`` keyword arguments such as
    ``arch``, ``factory``, ``checkpoint`` or ``model``) on ``data`` into ``out/a`` and ``out/b``,
    then compare them (:func:`compare_results`). ``run_kwargs`` apply to both runs. Both
    audits and every check are validated before either audit runs."""
    from .config import AuditConfig, annotation_kinds, measurable, validate
    from .runner import run_validated

    own, drops, errors = _b_checks(max_drop, thresholds, fail_under, max_errors)
    gate = {"max_nan": max_nan, "max_errors": errors, "gate_on": gate_on}
    GateOptions(**gate)  # bad values fail here, before any work
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose a folder path.")
    cfg_a = AuditConfig(data=data, out=out / "a", **{**run_kwargs, **model_a, **gate})
    cfg_b = AuditConfig(data=data, out=out / "b", **{**run_kwargs, **model_b, **gate})
    setups = validate(cfg_a), validate(cfg_b)
    for checks, setup in ((drops, setups[0]), (own + drops, setups[1])):
        methods = {m.name: setup.skipped.get(m.name) for m in setup.methods} | {"centre": None, "random": None}
        validate_checks(checks, methods=methods, metrics=measurable(annotation_kinds(setup.dataset.records), setup.faith),
                        classes=setup.dataset.classes, has_baseline=True)
    res_a = run_validated(cfg_a, setups[0])
    res_b = run_validated(cfg_b, setups[1])
    return compare_results(res_a, res_b, out=out, own_checks=own + drops, max_nan=max_nan, max_errors=errors,
                           gate_on=gate_on, check_preprocessing=False, cmap=cmap, report=report,
                           seed=run_kwargs.get("seed", 0))


def compare_results(results_a: str | Path | AuditResult, results_b: str | Path | AuditResult, *, out: str | Path,
                    max_drop: Sequence[str] = (), thresholds: str | Path | None = None, fail_under: Sequence[str] = (),
                    own_checks: Sequence[Check] = (), max_nan: int = 0, max_errors: int | None = None,
                    gate_on: str = "mean", allow_different_data: bool = False, check_preprocessing: bool = True,
                    cmap: str = "jet", report: bool = True, seed: int = 0,
                    inline_limit: int = INLINE_LIMIT_BYTES) -> Comparison:
    """Compare two audits of the same images; see the module docstring. ``passed`` is the gate.

    ``own_checks``: already parsed checks (B's own and drops), as :func:`compare_models` passes them.
    ``check_preprocessing=False``: the runs may differ in preprocessing (:func:`compare_models`
    ran both with the same options, so any difference is each model's own input size or
    normalisation)."""
    own, drops, errors = _b_checks(max_drop, thresholds, fail_under, max_errors)
    own += [c for c in own_checks if c.kind != "max_drop"]
    drops += [c for c in own_checks if c.kind == "max_drop"]
    options = GateOptions(max_nan=max_nan, max_errors=errors, gate_on=gate_on)
    a, b = as_result(results_a), as_result(results_b)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose a folder path.")
    if not allow_different_data:
        check_same_data(a.data, b.data, preprocessing=check_preprocessing)
    _validate_on_results(own + drops, a, b)
    out.mkdir(parents=True, exist_ok=True)
    errors_b = [r["error"] if str(r["error"]).startswith(str(r["id"])) else f"{r['id']}: {r['error']}"
                for r in b.rows if r.get("error")]
    verdicts = [v.to_dict() for v in evaluate(drops + own, b.data["summary"], b.data.get("per_class"),
                                              options=options, rows=b.rows, baseline_rows=a.rows, errors=errors_b,
                                              seed=seed)]
    data = _comparison(a, b, verdicts, seed)
    data["gate"] = options.to_dict()
    write_json(out / "comparison.json", data)
    write_junit(out / "junit.xml", verdicts, suite="attention-auditor.compare")
    result = Comparison(data, out)
    if report:
        from .report.compare import render_comparison

        render_comparison(result, a, b, cmap=cmap, inline_limit=inline_limit)
    return result


def _validate_on_results(checks: Sequence[Check], a: AuditResult, b: AuditResult) -> None:
    """Checks on finished results: their methods and metrics must be in B's summary (and A's, for drops)."""
    sb, sa = b.data["summary"], a.data["summary"]
    skipped = (b.data["settings"].get("skipped_methods") or {})
    methods = {m: None for m in sb} | {m: why for m, why in skipped.items()}
    metrics = set(metrics_of(sb))
    if any(c.kind == "max_drop" for c in checks):
        metrics &= set(metrics_of(sa))
    validate_checks(checks, methods=methods, metrics=metrics, classes=b.data["settings"].get("classes") or [],
                    has_baseline=True, why_no_metric=" (not in both runs' results)")


def _comparison(a: AuditResult, b: AuditResult, verdicts: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    side_a, side_b = side_of(a, "A"), side_of(b, "B")
    methods = [m for m in side_a.methods if m in side_b.methods]
    if not methods:
        raise UsageError(f"A ({', '.join(side_a.methods)}) and B ({', '.join(side_b.methods)}) share no method: "
                         "run both audits with --methods set to the same names.")
    metrics = [k for k in metrics_of(a.data["summary"]) if k in metrics_of(b.data["summary"])]
    pairs, counts = paired.pair_rows(a.rows, b.rows, methods, metrics)
    if not len(pairs):
        raise UsageError("A and B scored no image in common: compare two audits of the same data set.")
    agreement = np.full((len(pairs), len(methods), len(paired.AGREEMENT)), np.nan)
    try:
        for i, rid in enumerate(pairs.ids):
            shape = paired.image_shape(paired.resolve_pair_image(pairs.images[i], (a.out, b.out)))
            regions = tuple(s.preprocess.region(shape) if shape and s.preprocess else None for s in (side_a, side_b))
            for j, m in enumerate(methods):
                agree = paired.map_agreement(side_a.maps.get(m, rid), side_b.maps.get(m, rid), shape,
                                             side_a.normalization[m], side_b.normalization[m], regions=regions)
                agreement[i, j] = [agree[k] for k in paired.AGREEMENT]
    finally:
        side_a.maps.close()
        side_b.maps.close()
    images = PairedImages(pairs, methods, metrics, agreement)
    return {
        "kind": "attention-auditor comparison", "version": COMPARISON_VERSION,
        "a": _run_info(a), "b": _run_info(b), "methods": methods, "metrics": metrics, "counts": counts,
        "deltas": paired.metric_deltas(pairs, methods, metrics, seed=seed),
        "agreement": paired.agreement_summary(agreement[images.order], methods, seed=seed),  # in the images' order
        "images": images, "verdicts": verdicts, "passed": all(v["passed"] for v in verdicts),
    }


class PairedImages(StreamedList):
    """comparison.json's ``images``: per paired image its map agreement, metric deltas (B - A) and
    disagreement, most disagreement first -- held as arrays and built as dicts when read or
    written, so 50,000 images are never 50,000 nested dicts at once."""

    def __init__(self, pairs: paired.Pairs, methods: Sequence[str], metrics: Sequence[str], agreement: np.ndarray):
        self.ids, self.methods, self.metrics, self.agreement = pairs.ids, list(methods), list(metrics), agreement
        self.delta = np.stack([np.stack([np.subtract(*pairs.values[(m, k)][::-1]) for k in metrics], axis=-1)
                               if metrics else np.zeros((len(pairs), 0)) for m in methods], axis=1)
        spearman = agreement[:, :, paired.AGREEMENT.index("spearman")]
        # 1 - mean Spearman over the methods where it is defined (0: same ranking, 2: opposite), NaN if none
        self.disagreement = [1.0 - float(np.mean(row[ok])) if ok.any() else float("nan")
                             for row, ok in zip(spearman, np.isfinite(spearman))]
        d = self.disagreement
        self.order = sorted(range(len(d)), key=lambda i: (not math.isfinite(d[i]), -d[i] if math.isfinite(d[i]) else 0.0))

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = self.order[index]
        return {"id": self.ids[i], "disagreement": self.disagreement[i],
                "agreement": {m: {k: float(self.agreement[i, j, n]) for n, k in enumerate(paired.AGREEMENT)}
                              for j, m in enumerate(self.methods)},
                "delta": {m: {k: None if math.isnan(v := float(self.delta[i, j, n])) else v
                              for n, k in enumerate(self.metrics)} for j, m in enumerate(self.methods)}}


def _run_info(r: AuditResult) -> dict[str, Any]:
    fs = r.data.get("few_shot")
    errors = sum(1 for row in r.rows if row.get("error"))
    return {"results": str(r.out / "results.json"), "models": r.data["settings"].get("models"), "passed": r.passed,
            "errors": errors, **({"few_shot_accuracy": fs["accuracy"]} if fs else {})}


def format_comparison(data: Mapping[str, Any], *, top: int = 5) -> str:
    """A one-screen text summary: A and B means and the paired delta with its 95% CI and n,
    map agreement, the most-disagreeing images, the gate's verdicts."""
    from .report.common import fmt_ci

    c = data["counts"]
    lines = [f"{_images(c['paired'])} scored by both; {c['only_a']} only by A, {c['only_b']} only by B. "
             "delta = B - A, paired over the images both scored"]
    rows = [(f"{m}.{k}", fmt(d["mean_a"]), fmt(d["mean_b"]), f"{d['delta']:+.3f} {fmt_ci(d)}", str(d["n"]),
             _fmt_p(d["p_value"]), "B worse" if d["worse"] else "B better" if d["better"] else "")
            for m, mets in data["deltas"].items() for k, d in mets.items()]
    head = ("method.metric", "A", "B", "delta (95% CI)", "n", "p", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        lines.append("  ".join(v.ljust(w) if i in (0, 3, 6) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     .rstrip())
    for m, st in data["agreement"].items():
        lines.append(f"agreement {m}: Spearman {fmt(st['spearman'].get('mean'))}, CC {fmt(st['cc'].get('mean'))}, "
                     f"top-k {fmt(st['top_k_overlap'].get('mean'))} (n={st['spearman'].get('n', 0)})")
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


def _images(n: int) -> str:
    return f"{n} image{'' if n == 1 else 's'}"


def _fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"
