"""The gate: a verdict from all the evidence, failing closed when evidence is missing.

Rules (README "The gate's rules"):

* Every check is validated before an audit runs (:func:`validate_checks`): its method must be
  one this run computes and that applies to the model, its metric one the data can measure,
  its value inside the metric's range, its class one of the data set's.
* ``min`` / ``max`` checks are judged on every image the method was scored on: images whose
  map gave no valid value (NaN or constant map) count against the check -- it fails when
  there are more than ``max_nan`` of them (default 0); the verdict says how many.
* ``gate_on="mean"`` compares the mean; ``"ci"`` the 95% CI's bound on the safe side (the
  lower bound for ``min``, the upper for ``max`` and for a drop). Binary metrics (pointing
  game) carry a Wilson interval.
* ``max_drop`` is paired: over the images both runs scored, the mean of ``baseline - now``
  (``now - baseline`` for lower-is-better metrics), with a paired bootstrap CI. Images the
  baseline scored and this run could not (NaN) count against it like NaN maps.
* Error rows fail the audit when there are more than ``max_errors`` (default 0; also
  ``[errors] max = N`` in the thresholds file).
* A check with no valid value fails.
* A signed per-image error (:data:`ABSOLUTE_MAX`: integrated gradients' ``completeness_error``)
  takes only a ``max`` check, judged on its largest absolute value over the scored images (a
  worst case: ``gate_on`` does not apply); images without a value count as NaN maps do.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import UsageError
from .metrics import HIGHER_IS_BETTER, metric_range
from .thresholds import Check, Verdict

GATE_ON = ("mean", "ci")
#: signed per-image errors gated on their largest absolute value: metric -> the method that reports it
ABSOLUTE_MAX = {"completeness_error": "integrated_gradients"}
ERRORS = "errors"  # the thresholds file's [errors] table, and the errors verdict's method


@dataclass(frozen=True)
class GateOptions:
    """How missing evidence is judged; see the module docstring."""

    max_nan: int = 0
    max_errors: int = 0
    gate_on: str = "mean"

    def __post_init__(self) -> None:
        if self.gate_on not in GATE_ON:
            raise UsageError(f"--gate-on must be 'mean' or 'ci', got {self.gate_on!r}")
        for name in ("max_nan", "max_errors"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number >= 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_nan": self.max_nan, "max_errors": self.max_errors, "gate_on": self.gate_on}


def split_error_checks(checks: Sequence[Check], max_errors: int | None) -> tuple[list[Check], int]:
    """The metric checks, and the allowed number of error rows: ``max_errors`` when given,
    else the thresholds file's ``[errors] max``, else 0."""
    from_file = [c for c in checks if c.method == ERRORS]
    rest = [c for c in checks if c.method != ERRORS]
    if max_errors is not None:
        return rest, max_errors
    return rest, int(from_file[-1].threshold) if from_file else 0


def validate_checks(checks: Sequence[Check], *, methods: Mapping[str, str | None], metrics: Iterable[str],
                    classes: Sequence[str], has_baseline: bool, why_no_metric: str = "") -> None:
    """Refuse checks that could never be judged, all at once, before any image is decoded.

    ``methods``: every method name this run knows -> ``None`` when it runs, else why not.
    ``metrics``: the metric names this run can measure (from the data's annotations and the
    faithfulness checks asked for). ``why_no_metric``: appended to an unmeasurable metric's message.
    """
    metrics = set(metrics)
    known = {m for m in HIGHER_IS_BETTER if m not in ("spearman", "top_k_overlap")} | set(ABSOLUTE_MAX)
    problems = []
    for c in checks:
        where = f"'{c.name}'"
        if c.method not in methods:
            problems.append(f"{where}: unknown method '{c.method}'{_did_you_mean(c.method, methods)}; "
                            f"this run's methods: {', '.join(methods)}")
        elif methods[c.method] is not None:
            problems.append(f"{where}: {c.method} does not apply here ({methods[c.method]})")
        if c.metric in ABSOLUTE_MAX:
            problems += _absolute_max_problems(c, where)
        elif c.metric not in known:
            problems.append(f"{where}: unknown metric '{c.metric}'{_did_you_mean(c.metric, known)}")
        elif c.metric not in metrics:
            problems.append(f"{where}: this run cannot measure {c.metric}{why_no_metric}")
        else:
            lo, hi = metric_range(c.metric)
            if c.kind != "max_drop" and not lo <= c.threshold <= hi:
                hint = f"; did you mean {c.threshold / 100:g}?" if hi == 1 and 1 < c.threshold <= 100 else ""
                problems.append(f"{where}: {c.threshold:g} is outside {c.metric}'s range [{lo:g}, {hi:g}]{hint}")
            if c.kind == "max_drop" and not 0 <= c.threshold <= hi - lo:
                problems.append(f"{where}: an allowed drop must lie in [0, {hi - lo:g}] for {c.metric}, got {c.threshold:g}")
        if c.cls is not None and c.cls not in classes:
            problems.append(f"{where}: the data set has no class '{c.cls}'{_did_you_mean(c.cls, classes)}"
                            + (f" (its classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
                               if classes else " (it names no classes)"))
        if c.kind == "max_drop" and not has_baseline:
            problems.append(f"{where} needs a baseline run: pass --baseline old/results.json")
    if problems:
        raise UsageError("Invalid threshold(s), nothing was run:\n  " + "\n  ".join(dict.fromkeys(problems)))


def _absolute_max_problems(c: Check, where: str) -> list[str]:
    owner = ABSOLUTE_MAX[c.metric]
    out = []
    if c.method != owner:
        out.append(f"{where}: only {owner} reports {c.metric} (use {owner}.{c.metric})")
    if c.kind != "max" or c.threshold < 0:
        out.append(f"{where}: {c.metric} is a signed error per image; it takes one check, max = E (E >= 0), "
                   f"judged on its largest absolute value over the images")
    return out


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def evaluate(checks: Sequence[Check], summary: Mapping[str, Any], per_class: Mapping[str, Any] | None, *,
             options: GateOptions, rows: Iterable[Mapping[str, Any]] | None = None,
             baseline_rows: Iterable[Mapping[str, Any]] | None = None, errors: Sequence[str] = (),
             seed: int = 0) -> list[Verdict]:
    """Verdicts of ``checks`` (then the error-row check); see the module docstring.

    ``summary`` / ``per_class``: this run's (``summary[method][metric]`` = mean, CI, n, n_nan).
    ``rows`` / ``baseline_rows``: both runs' rows, for the paired ``max_drop`` checks.
    ``errors``: this run's error-row reasons, in row order.
    """
    out = []
    drops = [c for c in checks if c.kind == "max_drop"]
    paired = _paired_values(drops, rows, baseline_rows) if drops else {}
    for c in checks:
        if c.kind == "max_drop":
            out.append(_drop_verdict(c, *paired[(c.method, c.metric, c.cls)], options, seed))
        elif c.metric in ABSOLUTE_MAX:
            out.append(_absolute_max_verdict(c, rows, options))
        else:
            table = summary if c.cls is None else (per_class or {}).get(c.cls, {})
            out.append(_level_verdict(c, (table.get(c.method) or {}).get(c.metric), options))
    out.append(errors_verdict(errors, options.max_errors))
    return out


def errors_verdict(errors: Sequence[str], allowed: int) -> Verdict:
    """Passes when at most ``allowed`` images could not be audited; names the first reasons."""
    check = Check(ERRORS, "error_rows", "max", float(allowed))
    n = len(errors)
    if not n:
        return Verdict(check, 0.0, True, "no error rows")
    first = "; ".join(errors[:3]) + (" ..." if n > 3 else "")
    allowed_text = f"at most {allowed} allowed (--max-errors)"
    return Verdict(check, float(n), n <= allowed, f"{n} image(s) could not be audited, {allowed_text}: {first}")


def _stat(entry: Any) -> dict[str, Any] | None:
    if entry is None:
        return None
    return dict(entry) if isinstance(entry, Mapping) else dict(vars(entry))


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def _level_verdict(c: Check, entry: Any, options: GateOptions) -> Verdict:
    st = _stat(entry)
    where = f" for class '{c.cls}'" if c.cls else ""
    if st is None or not _finite(st.get("mean")):
        nan = int(st.get("n_nan", 0)) if st else 0
        extra = f" ({nan} image(s) without a valid map)" if nan else ""
        return Verdict(c, None, False, f"no valid value of {c.method}.{c.metric}{where}{extra} (fails closed)")
    n, n_nan = int(st.get("n", 0)), int(st.get("n_nan", 0))
    ci = f"95% CI {_fmt(st.get('ci_low'))}-{_fmt(st.get('ci_high'))}"
    counted = f"n={n} of {n + n_nan}" + (f", {n_nan} without a valid map allowed by --max-nan {options.max_nan}"
                                          if n_nan else "")
    if n_nan > options.max_nan:
        return Verdict(c, float(st["mean"]), False,
                       f"{n_nan} of {n + n_nan} scored image(s) gave no valid {c.metric} for {c.method}{where} "
                       f"(NaN or constant map): at most {options.max_nan} allowed (--max-nan); "
                       f"mean of the rest {_fmt(st['mean'])}")
    bound = st.get("ci_low" if c.kind == "min" else "ci_high")
    if options.gate_on == "ci" and _finite(bound):
        value, said = float(bound), f"CI {'lower' if c.kind == 'min' else 'upper'} bound {_fmt(bound)}"
    else:
        value, said = float(st["mean"]), f"mean {_fmt(st['mean'])}"
    ok = value >= c.threshold if c.kind == "min" else value <= c.threshold
    return Verdict(c, value, ok, f"{said} ({ci}, {counted})")


def _absolute_max_verdict(c: Check, rows: Iterable[Mapping[str, Any]] | None, options: GateOptions) -> Verdict:
    """``max |value|`` over the rows ``c.method`` was scored on (of class ``c.cls``); rows without a
    finite value count against it as NaN maps do."""
    where = f" for class '{c.cls}'" if c.cls else ""
    largest, n, n_nan = 0.0, 0, 0
    for r in rows or ():
        mets = (r.get("metrics") or {}).get(c.method)
        if r.get("error") or mets is None or (c.cls is not None and r.get("label_name") != c.cls):
            continue
        v = mets.get(c.metric)
        if _finite(v):
            largest, n = max(largest, abs(float(v))), n + 1
        else:
            n_nan += 1
    if not n:
        return Verdict(c, None, False, f"no valid value of {c.method}.{c.metric}{where} (fails closed)")
    said = f"largest |{c.metric}| {_fmt(largest)} over n={n} of {n + n_nan} image(s)"
    if n_nan > options.max_nan:
        return Verdict(c, largest, False, f"{n_nan} of {n + n_nan} image(s) gave no valid {c.metric} for "
                                          f"{c.method}{where}: at most {options.max_nan} allowed (--max-nan); {said}")
    return Verdict(c, largest, largest <= c.threshold, said)


def _paired_values(checks: Sequence[Check], rows, baseline_rows) -> dict[tuple, tuple[np.ndarray, np.ndarray, list]]:
    """Per drop check: the baseline's and this run's values over the images both scored, in the
    baseline's row order -- the order (and so the bootstrap draws) of the comparison's deltas."""
    if baseline_rows is None or rows is None:
        raise UsageError("a max_drop check needs a baseline run: pass --baseline old/results.json")
    keys = {(c.method, c.metric, c.cls) for c in checks}
    metrics = {(m, k) for m, k, _ in keys}
    now: dict[str, tuple] = {}  # id -> (its values, label name, clusters): a few numbers a row, rows may stream
    for r in rows:
        if not r.get("error"):
            now[str(r["id"])] = ({mk: _value(r, *mk) for mk in metrics}, r.get("label_name"), pair_clusters(r))
    vals: dict[tuple, tuple[list, list, list]] = {k: ([], [], []) for k in keys}
    for b in baseline_rows:
        hit = None if b.get("error") else now.get(str(b["id"]))
        if hit is None:
            continue
        values, label, clusters = hit
        for (m, k, cls) in keys:
            if cls is not None and label != cls:
                continue
            va, vb = _value(b, m, k), values[(m, k)]
            if va is None and vb is None:
                continue
            vals[(m, k, cls)][0].append(np.nan if va is None else va)
            vals[(m, k, cls)][1].append(np.nan if vb is None else vb)
            vals[(m, k, cls)][2].append(clusters)
    return {k: (np.array(a, dtype=float), np.array(b, dtype=float), c) for k, (a, b, c) in vals.items()}


def pair_clusters(row: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """A few-shot row's clusters for a paired bootstrap, ``(episode, image)``; None for independent rows."""
    return None if row.get("episode") is None else (row["episode"], row.get("record_id"))


def clusters_of(labels: Sequence[tuple[Any, Any] | None]) -> tuple[list, ...]:
    """The cluster factors of paired rows (episodes, images), or ``()`` when rows are independent."""
    if not labels or any(c is None for c in labels):
        return ()
    return tuple(list(f) for f in zip(*labels))


def _value(row: Mapping[str, Any], method: str, metric: str) -> float | None:
    v = ((row.get("metrics") or {}).get(method) or {}).get(metric)
    return float(v) if _finite(v) else None


def _drop_verdict(c: Check, base: np.ndarray, now: np.ndarray, labels: list, options: GateOptions,
                  seed: int) -> Verdict:
    from .metrics import paired_bootstrap_ci

    where = f" for class '{c.cls}'" if c.cls else ""
    lost = int((np.isfinite(base) & ~np.isfinite(now)).sum())
    keep = np.isfinite(base) & np.isfinite(now)
    n = int(keep.sum())
    if not n:
        return Verdict(c, None, False, f"no image with a valid {c.method}.{c.metric}{where} in both runs (fails closed)")
    sign = 1.0 if HIGHER_IS_BETTER.get(c.metric, True) else -1.0
    drop = sign * float((base[keep] - now[keep]).mean())
    kept = [x for x, k in zip(labels, keep) if k]
    ci = paired_bootstrap_ci(now[keep], base[keep], seed=seed, clusters=clusters_of(kept))  # of base - now
    lo, hi = sorted((sign * ci.ci_low, sign * ci.ci_high))
    text = (f"paired over n={n} image(s): baseline {_fmt(base[keep].mean())} -> now {_fmt(now[keep].mean())}, "
            f"drop {_fmt(drop)} (95% CI {_fmt(lo)}-{_fmt(hi)})")
    if lost > options.max_nan:
        return Verdict(c, drop, False, f"{lost} image(s) the baseline scored gave no valid {c.metric} for {c.method} "
                                       f"now: at most {options.max_nan} allowed (--max-nan); {text}")
    value = hi if options.gate_on == "ci" and math.isfinite(hi) else drop
    return Verdict(c, value, value <= c.threshold, text + (f"; judged on the CI's upper bound {_fmt(hi)}"
                                                             if options.gate_on == "ci" else ""))


def _fmt(v: Any) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{float(v):.4f}"
