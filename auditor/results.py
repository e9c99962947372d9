"""Audit results: ``results.json`` (schema-checked), ``results.csv`` and ``junit.xml``.

``results.json`` layout (``SCHEMA_VERSION``; JSON Schema in ``auditor/schema``):
``settings`` (models, checkpoints + sha256, methods, normalisation, preprocessing,
thresholds, versions), ``summary[method][metric]`` = ``{mean, ci_low, ci_high, n, n_nan}``
(baselines ``centre`` and ``random`` appear as methods), ``per_class[class][method][metric]``,
``rows`` (one per image; above ``ROWS_INLINE_LIMIT`` images a reference to ``rows.jsonl`` and
its byte-offset index instead, read back as a :class:`RowsFile`), ``verdicts``, ``passed``, ``counts``, and ``timing`` -- the only
field that differs between two identical runs.
"""

from __future__ import annotations

import collections.abc
import csv
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from xml.etree import ElementTree as ET

from .io import atomic_path, write_text

SCHEMA_VERSION = "1.0"
BASELINES = ("centre", "random")


def schema_path() -> Path:
    return Path(__file__).parent / "schema" / "results.schema.json"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("attention-auditor", "torch", "numpy", "pillow", "scikit-image"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def clean(value: Any) -> Any:
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


ROW_DIGITS = 8  # significant digits of a row's floats in rows.jsonl / results.csv


def row_json(row: Mapping[str, Any]) -> str:
    """One ``rows.jsonl`` line (without its newline): :func:`clean`, every float rounded to
    :data:`ROW_DIGITS` significant digits, no spaces after ``,`` and ``:``.

    A relative change of at most 5e-8, no coarser than the float32 maps the metrics are computed
    from (float32 keeps 2**-24 = 6e-8): the summaries, CIs and gates -- computed from these rows --
    agree with full-precision rows to 7 significant digits, while a row is ~40% shorter than with
    Python's 17-digit floats and default separators (50,000 rows: ~20 MB less across rows.jsonl and
    results.csv)."""
    return json.dumps(_rounded(clean(row)), separators=(",", ":"), allow_nan=False)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{ROW_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@dataclass
class Summary:
    """Mean with a 95% bootstrap CI over images (``n`` valid values, ``n_nan`` undefined)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_nan: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Summary":
        nan = float("nan")
        return cls(*(nan if d.get(k) is None else d[k] for k in ("mean", "ci_low", "ci_high")),
                   int(d.get("n", 0)), int(d.get("n_nan", 0)))


@dataclass
class AuditResult:
    """What an audit produced; ``summary[method][metric]`` are :class:`Summary` objects."""

    data: dict[str, Any]
    out: Path
    summary: dict[str, dict[str, Summary]] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = {m: {k: Summary.from_dict(v) for k, v in mets.items()}
                        for m, mets in self.data["summary"].items()}

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    @property
    def rows(self) -> Sequence[dict[str, Any]]:
        return self.data["rows"]

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return self.data["verdicts"]

    @classmethod
    def load(cls, path: str | Path) -> "AuditResult":
        from .errors import DataError

        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"Results not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path} is not a results.json file: {e}") from None
        if not isinstance(data, dict) or "schema_version" not in data or "summary" not in data:
            raise DataError(f"{path} is not an attention-auditor results.json (no schema_version / summary)")
        if isinstance(data.get("rows"), dict):
            data["rows"] = _external_rows(path, data["rows"])
        return cls(data, path.parent)


def _external_rows(path: Path, ref: Mapping[str, Any]) -> "RowsFile":
    """The rows a results.json points to (``rows.jsonl`` beside it), checked against its record."""
    from .errors import DataError

    rows_path = path.parent / str(ref.get("file", "rows.jsonl"))
    if not rows_path.is_file():
        raise DataError(f"{path} keeps its rows in {rows_path}, which is missing: copy results.json together with "
                        f"{rows_path.name} and {ref.get('index', INDEX_FILE)} (or re-run the audit)")
    if ref.get("bytes") is not None and rows_path.stat().st_size != ref["bytes"]:
        raise DataError(f"{rows_path} is {rows_path.stat().st_size} bytes, but {path} was written with {ref['bytes']}: "
                        "the rows changed after the audit; re-run it (or restore the file)")
    index = path.parent / str(ref.get("index", INDEX_FILE))
    return RowsFile(rows_path, index=index if index.is_file() else None)


class RowsFile(collections.abc.Sequence):
    """The per-image rows of a ``rows.jsonl`` file, read from disk each time they are iterated.

    An audit of 10,000 images keeps its rows here instead of in memory (its peak memory does
    not grow with the number of images). With its index (``rows.index.tsv``: one
    ``<byte offset>\t<id>`` line per row, see :func:`write_index`) ``rows[i]`` and
    :meth:`get` seek straight to the row; without one, indexing reads the file up to the row.
    """

    def __init__(self, path: str | Path, *, index: str | Path | None = None):
        self.path = Path(path)
        self.index_path = Path(index) if index is not None else None
        self._len: int | None = None
        self._offsets: list[int] | None = None
        self._ids: dict[str, int] | None = None

    def __iter__(self):
        n = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    n += 1
                    yield json.loads(line)
        self._len = n  # a whole pass counted the rows: len() needs no other

    def __len__(self) -> int:
        if self._len is None:
            self._len = len(self._offsets) if self._load_index() else sum(1 for _ in self)
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if self._load_index():
            if not 0 <= index < len(self._offsets):
                raise IndexError(index)
            return self._read_at(self._offsets[index])
        for i, row in enumerate(self):
            if i == index:
                return row
        raise IndexError(index)

    def get(self, image_id: str) -> dict[str, Any] | None:
        """The row of ``image_id``, or None."""
        if self._load_index():
            at = self._ids.get(str(image_id))
            return None if at is None else self._read_at(self._offsets[at])
        return next((r for r in self if str(r.get("id")) == str(image_id)), None)

    def _read_at(self, offset: int) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return json.loads(f.readline())

    def _load_index(self) -> bool:
        if self._offsets is None and self.index_path is not None and self.index_path.is_file():
            offsets, ids = [], {}
            with open(self.index_path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    offset, _, image_id = line.rstrip("\n").partition("\t")
                    offsets.append(int(offset))
                    ids.setdefault(image_id, i)
            self._offsets, self._ids = offsets, ids
        return self._offsets is not None

    def __repr__(self) -> str:
        return f"RowsFile({str(self.path)!r})"


class StreamedList(collections.abc.Sequence):
    """A top-level list of a JSON document that :func:`write_json` writes item by item (a
    subclass builds each item when it is read): the same bytes as a list, never all at once."""


ROWS_INLINE_LIMIT = 2000  # more rows than this stay in rows.jsonl (results.json points to it)
INDEX_FILE = "rows.index.tsv"
_ROWS_MARK = "\x00rows\x00"


def write_index(rows_path: Path, index_path: Path) -> int:
    """``<byte offset>\t<id>`` per row of ``rows_path``, into ``index_path``; returns the row count."""
    n = 0
    with open(rows_path, "rb") as f, atomic_path(index_path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        offset = 0
        for line in f:
            if line.strip():
                out.write(f"{offset}\t{_row_id(line)}\n")
                n += 1
            offset += len(line)
    return n


_DECODER = json.JSONDecoder()
_ID_FIRST = b'{"id":'  # how row_json starts a row: its id is the JSON value right after


def _row_id(line: bytes) -> Any:
    """``json.loads(line).get("id")``, without parsing the rest of the row when the id comes first
    (a row is a JSON object, so it has one ``id``)."""
    if line.startswith(_ID_FIRST):
        return _DECODER.raw_decode(line[len(_ID_FIRST):].decode("utf-8").lstrip(" \t"))[0]
    return json.loads(line).get("id")


def rows_reference(rows: RowsFile, folder: Path) -> dict[str, Any]:
    """The ``rows`` entry of a results.json whose rows stay in ``rows.jsonl``: file, index, count and size."""
    index = folder / INDEX_FILE
    count = write_index(rows.path, index)
    return {"file": os.path.relpath(rows.path, folder), "index": INDEX_FILE, "count": count,
            "bytes": rows.path.stat().st_size}


def write_json(path: Path, data: Mapping[str, Any], *, inline_limit: int | None = None) -> None:
    """``results.json``. Rows given as a :class:`RowsFile` are streamed into it, one per line,
    up to ``inline_limit`` rows [default: ``ROWS_INLINE_LIMIT``]; above that results.json records
    where they are (``{"file": "rows.jsonl", "index": "rows.index.tsv", "count", "bytes"}``) instead."""
    rows = data.get("rows")
    inline_limit = ROWS_INLINE_LIMIT if inline_limit is None else inline_limit
    if not isinstance(rows, RowsFile):
        _write_streamed(path, data)
        return
    if len(rows) > inline_limit:
        write_text(path, json.dumps(clean({**data, "rows": rows_reference(rows, path.parent)}), indent=1,
                                    sort_keys=False, allow_nan=False) + "\n")
        return
    (path.parent / INDEX_FILE).unlink(missing_ok=True)  # inline rows: a stale index would mislead
    text = json.dumps(clean({**data, "rows": _ROWS_MARK}), indent=1, sort_keys=False, allow_nan=False)
    before, after = text.split(json.dumps(_ROWS_MARK), 1)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(before + "[")
        for i, row in enumerate(rows):
            f.write(("," if i else "") + "\n  " + json.dumps(clean(row), allow_nan=False))
        f.write("\n ]" + after + "\n")


def _write_streamed(path: Path, data: Mapping[str, Any]) -> None:
    """``json.dumps(data, indent=1)`` into ``path``, each top-level :class:`StreamedList` written
    item by item (the same bytes as a list)."""
    marks = {k: f"\x00{k}\x00" for k, v in data.items() if isinstance(v, StreamedList)}
    text = json.dumps(clean({**data, **marks}), indent=1, sort_keys=False, allow_nan=False)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for key, mark in marks.items():
            before, text = text.split(json.dumps(mark), 1)
            f.write(before)
            items = data[key]
            if not len(items):
                f.write("[]")
                continue
            f.write("[")
            for i, item in enumerate(items):
                lines = json.dumps(clean(item), indent=1, sort_keys=False, allow_nan=False).split("\n")
                f.write(("," if i else "") + "\n" + "\n".join("  " + line for line in lines))
            f.write("\n ]")
        f.write(text + "\n")


def csv_metric_columns(row: Mapping[str, Any]) -> set[str]:
    """The ``<method>.<metric>`` columns of results.csv that ``row`` fills."""
    return {f"{m}.{k}" for m, mets in (row.get("metrics") or {}).items() for k in mets}


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], *, metric_columns: Iterable[str] | None = None) -> None:
    """One line per image: id, image, label, target, prediction, error, ``<method>.<metric>``...

    Streamed, so a :class:`RowsFile` of 50,000 rows is never held in memory: one pass over
    ``rows`` with ``metric_columns`` (every row's :func:`csv_metric_columns`, gathered in an
    earlier pass), else two (the columns, then the lines)."""
    if metric_columns is None:
        metric_columns = {c for r in rows for c in csv_metric_columns(r)}
    metric_cols = sorted(set(metric_columns))
    cols = ["id", "image", "label", "target", "prediction", "error", *metric_cols]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            flat = {f"{m}.{k}": v for m, mets in (r.get("metrics") or {}).items() for k, v in mets.items()}
            w.writerow(["" if (v := (r.get(c) if c in r else flat.get(c))) is None else v for c in cols])


def write_junit(path: Path, verdicts: Sequence[Mapping[str, Any]], *, suite: str = "attention-auditor",
                duration: float = 0.0) -> None:
    """One ``<testcase>`` per threshold check; a failure carries the measured value."""
    failures = sum(not v["passed"] for v in verdicts)
    ts = ET.Element("testsuite", name=suite, tests=str(len(verdicts)), failures=str(failures), errors="0",
                    time=f"{duration:.3f}")
    for v in verdicts:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{v['method']}", name=v["name"], time="0")
        if not v["passed"]:
            value = "none" if v["value"] is None else f"{v['value']:.4f}"
            f = ET.SubElement(tc, "failure", message=f"{v['name']}: measured {value}", type="threshold")
            f.text = v["reason"]
    root = ET.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    root.append(ts)
    ET.indent(root)
    write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def format_summary(data: Mapping[str, Any], *, width: int = 100) -> str:
    """A one-screen text summary: method x metric means with their 95% CIs, the number of
    images each method was scored on (and how many gave no valid value), baselines, verdicts.

    Metrics that do not fit in ``width`` columns continue in a second table below."""
    summary = data["summary"]
    metrics = sorted({k for mets in summary.values() for k in mets})
    cell = 22
    per_table = max(1, (width - 30) // cell)
    lines: list[str] = []
    for start in range(0, max(len(metrics), 1), per_table):
        shown = metrics[start:start + per_table]
        lines += ([""] if start else []) + [f"{'method':<18}{'n (NaN)':>12}" + "".join(f"{m[:cell - 2]:>{cell}}"
                                                                                for m in shown)]
        for method, mets in summary.items():
            cells = []
            for k in shown:
                s = mets.get(k)
                cells.append(f"{'-':>{cell}}" if not s or s["mean"] is None
                             else f"{s['mean']:.3f} [{_short(s['ci_low'])}, {_short(s['ci_high'])}]".rjust(cell - 1).rjust(cell))
            n = max((int(s.get("n", 0)) for s in mets.values()), default=0)
            nan = max((int(s.get("n_nan", 0)) for s in mets.values()), default=0)
            tag = " (baseline)" if method in BASELINES else ""
            lines.append(f"{method + tag:<18}{f'{n} ({nan})':>12}" + "".join(cells))
    c = data["counts"]
    lines.append(f"\nCIs: 95%, Wilson for the pointing game, else bootstrap. {c['ok']} image(s) scored, "
                 f"{c['errors']} error row(s).")
    if data.get("few_shot"):
        fs, acc = data["few_shot"], data["few_shot"]["accuracy"]
        value = "-" if acc["mean"] is None else f"{acc['mean']:.3f} (95% CI {acc['ci_low']:.3f}-{acc['ci_high']:.3f})"
        lines.append(f"{fs['n_way']}-way {fs['k_shot']}-shot accuracy ({fs.get('decision', 'nearest prototype')}) "
                     f"over {acc['n']} episode(s): {value}")
    for v in data["verdicts"]:
        lines.append(f"{'PASS' if v['passed'] else 'FAIL'}  {v['name']}  ({v['reason']})")
    lines.append("PASSED" if data["passed"] else "FAILED")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"
