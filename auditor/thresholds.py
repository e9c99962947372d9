"""Thresholds: what an audit must reach to pass.

A thresholds file (TOML) names ``method.metric`` tables::

    [gradcam.pointing_game]
    min = 0.8                 # summary mean must be >= 0.8
    max_drop = 0.05           # and at most 0.05 below the baseline run (--baseline)

    [gradcam.pointing_game.per_class]
    cat = { min = 0.7 }       # per-class means

    [rollout.kl_div]
    max = 1.5

``--fail-under "gradcam.pointing_game=0.8"`` is the same as ``min = 0.8``; ``--max-drop
"gradcam.pointing_game=0.05"`` the same as ``max_drop``. A check whose metric has no valid
value fails (fail closed) with the reason.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("min", "max", "max_drop")
_SYMBOL = {"min": ">=", "max": "<=", "max_drop": "drop <="}


@dataclass(frozen=True)
class Check:
    """One threshold: ``kind`` is ``min``, ``max`` or ``max_drop`` (vs a baseline)."""

    method: str
    metric: str
    kind: str
    threshold: float
    cls: str | None = None

    @property
    def name(self) -> str:
        where = f"[{self.cls}]" if self.cls else ""
        return f"{self.method}.{self.metric}{where} {_SYMBOL[self.kind]} {self.threshold:g}"


@dataclass(frozen=True)
class Verdict:
    check: Check
    value: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.check.name, **asdict(self.check), "value": self.value, "passed": self.passed,
                "reason": self.reason}


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UsageError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _split_key(key: str, where: str) -> tuple[str, str]:
    method, dot, metric = key.strip().partition(".")
    if not dot or not method or not metric:
        raise UsageError(f"{where}: expected 'method.metric', got '{key}' (e.g. gradcam.pointing_game)")
    return method, metric


def parse_assignment(text: str, kind: str) -> Check:
    """``"gradcam.pointing_game=0.8"`` -> a :class:`Check` of ``kind``."""
    key, eq, value = text.partition("=")
    if not eq:
        raise UsageError(f"expected METHOD.METRIC=VALUE, got '{text}'")
    method, metric = _split_key(key, f"'{text}'")
    try:
        threshold = float(value)
    except ValueError:
        raise UsageError(f"'{text}': '{value}' is not a number") from None
    return Check(method, metric, kind, _number(threshold, f"'{text}'"))


def load_thresholds(path: str | Path) -> list[Check]:
    """Read a thresholds TOML file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Thresholds file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"Cannot parse thresholds file {path}: {e}") from None
    checks: list[Check] = []
    for method, metrics in doc.items():
        if not isinstance(metrics, dict):
            raise UsageError(f"{path}: '{method}' must be a table of metrics, e.g. [{method}.pointing_game]")
        for metric, spec in metrics.items():
            where = f"{path}: [{method}.{metric}]"
            if not isinstance(spec, dict):
                raise UsageError(f"{where} must be a table with min / max / max_drop")
            checks.extend(_checks_of(method, metric, spec, where, None))
            for cls, cspec in (spec.get("per_class") or {}).items():
                if not isinstance(cspec, dict):
                    raise UsageError(f"{where}.per_class.{cls} must be a table, e.g. {{ min = 0.7 }}")
                checks.extend(_checks_of(method, metric, cspec, f"{where}.per_class.{cls}", str(cls)))
    return checks


def _checks_of(method: str, metric: str, spec: Mapping[str, Any], where: str, cls: str | None) -> Iterable[Check]:
    unknown = set(spec) - set(KINDS) - {"per_class"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {sorted(unknown)}; use {', '.join(KINDS)} or per_class")
    for kind in KINDS:
        if kind in spec:
            yield Check(method, metric, kind, _number(spec[kind], f"{where}.{kind}"), cls)


def evaluate(checks: Iterable[Check], summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
             per_class: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]] | None = None,
             baseline: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
             higher_is_better: Mapping[str, bool] | None = None) -> list[Verdict]:
    """Verdicts for ``checks`` against ``summary[method][metric]["mean"]``.

    ``max_drop`` compares with ``baseline`` (another run's summary): the drop is
    ``baseline - current`` for metrics where higher is better, ``current - baseline`` else.
    """
    higher_is_better = higher_is_better or {}
    verdicts = []
    for c in checks:
        table = summary if c.cls is None else (per_class or {}).get(c.cls, {})
        value = _mean(table, c.method, c.metric)
        if value is None:
            where = f" for class '{c.cls}'" if c.cls else ""
            verdicts.append(Verdict(c, None, False, f"no valid value of {c.method}.{c.metric}{where} (fails closed)"))
            continue
        if c.kind == "max_drop":
            if baseline is None:
                raise UsageError(f"'{c.name}' needs a baseline run: pass --baseline old/results.json")
            base = _mean(baseline, c.method, c.metric)
            if base is None:
                verdicts.append(Verdict(c, None, False, f"the baseline has no value of {c.method}.{c.metric}"))
                continue
            drop = base - value if higher_is_better.get(c.metric, True) else value - base
            verdicts.append(Verdict(c, drop, drop <= c.threshold,
                                    f"baseline {base:.4f}, now {value:.4f}: drop {drop:.4f}"))
        elif c.kind == "min":
            verdicts.append(Verdict(c, value, value >= c.threshold, f"measured {value:.4f}"))
        else:
            verdicts.append(Verdict(c, value, value <= c.threshold, f"measured {value:.4f}"))
    return verdicts


def _mean(table: Mapping[str, Any], method: str, metric: str) -> float | None:
    entry = table.get(method, {}).get(metric)
    if entry is None:
        return None
    mean = entry["mean"] if isinstance(entry, Mapping) else getattr(entry, "mean", None)
    return None if mean is None or not math.isfinite(mean) else float(mean)
