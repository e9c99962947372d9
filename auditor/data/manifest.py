"""Manifests: one record per JSONL line or CSV row.

JSONL fields (only ``image`` is required)::

    {"classes": ["cat", "dog"]}                      <- optional header, FIRST line only
    {"image": "img/a.png", "id": "a", "label": "cat", "boxes": [[10, 5, 40, 30]],
     "fixations": [[12.5, 8.0]], "gaze": "gaze/a.npy", "mask": "masks/a.png", "split": "support", "meta": {}}

- ``image``, ``gaze``, ``mask``: paths relative to the manifest's folder (the data root).
- ``id``: defaults to the image path relative to the root, as posix.
- ``label``: a class index, or a class name looked up in the class list. The class list is
  the header line, or the ``classes=`` argument (both given and different -> DataError),
  or, when neither is given, the sorted unique label *names* of the manifest. With no
  list and integer labels, ``Dataset.classes`` is empty and indices are only checked >= 0.
- ``boxes``: ``[x0, y0, x1, y1]`` in original pixels, or ``{"box": [...], "label": "cat"}``
  (a box's label is a class name, compared with the record's; an unlabelled box is the
  record's class; :func:`auditor.data.annotations.mask_boxes`).
- ``mask``: an object mask of the record's class, a binary / greyscale image (non-zero =
  object) or a ``.npy`` of bool / 0-1 (:func:`auditor.data.annotations.load_mask`).
- ``fixations``: ``[x, y]`` pixel points (x = column); an empty list means none.
- ``split``: ``"support"`` or ``"query"``; ``meta``: a free JSON object.
- Any other field is an error for that record (a typo must not drop annotations silently).

CSV: a header row with columns from ``image,id,label,boxes,fixations,gaze,mask,split,meta``
(``image`` required); ``boxes``, ``fixations`` and ``meta`` cells hold JSON; a ``label``
cell of digits is a class index, anything else a class name; empty cells mean absent.

A bad entry becomes a :class:`RecordError` whose reason starts with ``"<file>:<line>: "``;
the others still load. A missing, unreadable or empty manifest, a bad header or class list
is a :class:`DataError`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import DataError
from .records import (BadRecord, Dataset, Record, RecordError, RecordList, show_value, absolute, check_classes, lookup_label,
                      parse_boxes, parse_fixations, relative_id, resolve_path)

FIELDS = ("image", "id", "label", "boxes", "fixations", "gaze", "mask", "split", "meta")
SPLITS = ("support", "query")
_JSON_CELLS = ("boxes", "fixations", "meta")
_INT = re.compile(r"[+-]?\d+")

#: ``(line number, parsed object or the reason it did not parse, the entry's JSON text or None)``.
Entry = tuple[int, Any, "str | None"]


@dataclass(frozen=True)
class _Header:
    classes: list[str]


def read_manifest(path: str | Path, *, allow_outside_root: bool = False,
                  classes: Sequence[str] | None = None) -> Dataset:
    """Read a ``.jsonl`` or ``.csv`` manifest (see the module docstring for the format).

    A ``.jsonl`` manifest is streamed line by line (twice when the class list comes from the
    labels); its records are kept as their lines (:class:`~auditor.data.records.RecordList`),
    so memory grows by a line's length per record, not by parsed objects."""
    path = absolute(path)
    if not path.is_file():
        raise DataError(f"Manifest not found: {path}")
    if path.suffix.lower() == ".csv":
        text = _read_text(path)
        return _build(lambda: _csv_entries(text, path), classes, root=path.parent, source=path,
                      allow_outside=allow_outside_root)
    return _build(lambda: _jsonl_entries(_file_lines(path), path.name), classes, root=path.parent, source=path,
                  allow_outside=allow_outside_root)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"Manifest {path} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"Cannot read manifest {path}: {e}") from None


def _file_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file, split at ``\\n`` only (a stray ``\\r`` stays inside its line)."""
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for line in f:
                yield line[:-1] if line.endswith("\n") else line
    except UnicodeDecodeError as e:
        raise DataError(f"Manifest {path} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"Cannot read manifest {path}: {e}") from None


def parse_jsonl(lines: Iterable[str], *, root: str | Path, name: str = "manifest.jsonl",
                classes: Sequence[str] | None = None, allow_outside_root: bool = False) -> Dataset:
    """Parse JSONL manifest lines as if read from ``root/name``. Raises only :class:`DataError`."""
    root = absolute(root)
    lines = list(lines)
    return _build(lambda: _jsonl_entries(lines, name), classes, root=root, source=root / name,
                  allow_outside=allow_outside_root)


def _jsonl_entries(lines: Iterable[str], name: str) -> Iterator[Entry]:
    """One entry per non-blank line; a valid class header on the first one comes as a :class:`_Header`."""
    first = True
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            obj = f"invalid JSON ({e})"
        if first and isinstance(obj, dict) and "classes" in obj and "image" not in obj:
            if set(obj) != {"classes"}:
                raise DataError(f"{name}:{n}: the header line may only hold \"classes\", got fields {sorted(obj)}")
            obj = _Header(check_classes(obj["classes"], f"{name}:{n}"))
        first = False
        yield n, obj, line


def _csv_entries(text: str, path: Path) -> Iterator[Entry]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in next(reader, [])]
        if "image" not in columns or set(columns) - set(FIELDS) or len(set(columns)) != len(columns):
            raise DataError(f"{path}: wrong CSV header: expected columns {','.join(FIELDS)} "
                            f"('image' required, each at most once), got {','.join(columns) or 'nothing'}")
        start = reader.line_num + 1
        for row in reader:
            n, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            yield n, _csv_row(row, columns), None
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not a readable CSV file ({e})") from None


def _csv_row(row: list[str], columns: list[str]) -> dict[str, Any] | str:
    if len(row) != len(columns):
        return f"row has {len(row)} cells, the header has {len(columns)}"
    obj: dict[str, Any] = {}
    for col, cell in zip(columns, row):
        cell = cell.strip()
        if not cell:
            continue
        if col in _JSON_CELLS:
            try:
                obj[col] = json.loads(cell)
            except (ValueError, RecursionError) as e:
                return f"{col} cell is not valid JSON ({e})"
        elif col == "label" and _INT.fullmatch(cell):
            obj[col] = int(cell)
        else:
            obj[col] = cell
    return obj


def _class_list(entries: Callable[[], Iterator[Entry]], given: Sequence[str] | None,
                source: Path) -> tuple[list[str], bool]:
    """``(classes, has header)``: the given list, else the header's, else the sorted unique label
    names (a second pass over the entries)."""
    scan = entries()
    first = next(scan, None)
    scan.close()
    header = first[1].classes if first is not None and isinstance(first[1], _Header) else None
    if given is not None:
        given = check_classes(given, "classes= argument")
        if header is not None and header != given:
            raise DataError(f"{source}: the header's class list {header} differs from the classes given {given}; "
                            "pass one of them")
        return given, header is not None
    if header is not None:
        return header, True
    return sorted({o["label"] for _, o, _ in entries() if isinstance(o, dict) and isinstance(o.get("label"), str)}), False


@dataclass(frozen=True)
class _Rebuild:
    """A stored entry (its JSON text and line) -> the :class:`Record` it was validated as."""

    root: Path
    classes: tuple[str, ...]
    name: str

    def __call__(self, text: str, line: int) -> Record:
        # validated when the manifest was read: the root rule holds, the path is the same either way
        return _record(json.loads(text), self.root, list(self.classes), f"{self.name}:{line}", True)


def _build(entries: Callable[[], Iterator[Entry]], given: Sequence[str] | None, *, root: Path,
           source: Path, allow_outside: bool) -> Dataset:
    """Validate every entry in one pass, keeping each valid one as its JSON text (``entries()``
    gives a fresh iterator each call)."""
    classes, has_header = _class_list(entries, given, source)
    records = RecordList(_Rebuild(root, tuple(classes), source.name))
    errors: list[RecordError] = []
    first_line: dict[str, int] = {}
    for n, obj, text in itertools.islice(entries(), 1 if has_header else 0, None):
        where = f"{source.name}:{n}"
        try:
            if isinstance(obj, str):
                raise BadRecord(obj)
            rec = _record(obj, root, classes, where, allow_outside)
        except BadRecord as e:
            errors.append(RecordError(_guess_id(obj, where), where, _guess_image(obj, root), f"{where}: {e}"))
            continue
        if rec.id in first_line:
            reason = f"{where}: duplicate id {show_value(rec.id)} (first used on line {first_line[rec.id]})"
            errors.append(RecordError(rec.id, where, rec.image, reason))
            continue
        first_line[rec.id] = n
        records.append(json.dumps(obj) if text is None else text, n)
    if not records and not errors:
        raise DataError(f"Manifest {source} has no records: write one entry per line with at least an "
                        "\"image\" path (relative to the manifest's folder)")
    return Dataset(records, errors, classes, root, source)


def _record(obj: Any, root: Path, classes: list[str], where: str, allow_outside: bool) -> Record:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object per line, got {show_value(obj)}")
    if "classes" in obj:
        raise BadRecord("a {\"classes\": [...]} header must be the first line of the manifest")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise BadRecord(f"unknown field(s) {unknown}; known fields: {', '.join(FIELDS)} "
                        "(put free data under \"meta\")")
    if "image" not in obj:
        raise BadRecord("missing the required field \"image\"")
    image = resolve_path(obj["image"], root, allow_outside=allow_outside, what="image")
    rid = obj.get("id")
    if rid is None:
        rid = relative_id(image, root)
    elif isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    elif not isinstance(rid, str) or not rid:
        raise BadRecord(f"id must be a non-empty string, got {show_value(rid)}")
    label, label_name = lookup_label(obj.get("label"), classes)
    gaze, mask = (None if obj.get(k) is None else resolve_path(obj[k], root, allow_outside=allow_outside, what=k)
                  for k in ("gaze", "mask"))
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise BadRecord(f"split must be one of {', '.join(SPLITS)}, got {show_value(split)}")
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise BadRecord(f"meta must be a JSON object, got {show_value(meta)}")
    return Record(id=rid, image=image, label=label, label_name=label_name, boxes=parse_boxes(obj.get("boxes")),
                  fixations=parse_fixations(obj.get("fixations")), gaze=gaze, mask=mask, split=split,
                  meta=dict(meta or {}), source=where)


def _guess_id(obj: Any, where: str) -> str:
    if isinstance(obj, dict):
        for key in ("id", "image"):
            if isinstance(obj.get(key), (str, int)) and not isinstance(obj.get(key), bool) and obj[key] != "":
                return str(obj[key])
    return where


def _guess_image(obj: Any, root: Path) -> Path | None:
    raw = obj.get("image") if isinstance(obj, dict) else None
    return absolute(root / raw) if isinstance(raw, str) and raw.strip() and "\x00" not in raw else None
