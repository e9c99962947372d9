"""Thresholds: what an audit must reach to pass.

A thresholds file (TOML) names ``method.metric`` tables::

    [gradcam.pointing_game]
    min = 0.8                 # summary mean must be >= 0.8
    max_drop = 0.05           # and at most 0.05 below the baseline run (--baseline)

    [gradcam.pointing_game.per_class]
    cat = { min = 0.7 }       # per-class means

    [rollout.kl_div]
    max = 1.5

    [errors]
    max = 2                   # images that may fail to load / score (default 0: any error fails)

``--fail-under "gradcam.pointing_game=0.8"`` is the same as ``min = 0.8``; ``--max-drop
"gradcam.pointing_game=0.05"`` the same as ``max_drop``. How checks are judged (fail closed,
paired drops, error rows): :mod:`auditor.gate`.
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
        if method == "errors":  # [errors] max = N: the error rows allowed
            spec = metrics if isinstance(metrics, dict) else {}
            n = spec.get("max")
            if set(spec) != {"max"} or isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise UsageError(f"{path}: [errors] takes one key, max = N (a whole number >= 0), got {metrics!r}")
            checks.append(Check("errors", "error_rows", "max", float(n)))
            continue
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
