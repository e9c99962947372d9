"""Typed records, and the rules every data source applies when it builds them.

A data source (manifest, class folders, COCO) turns its input into :class:`Record` objects;
an entry it cannot parse becomes a :class:`RecordError` instead, so one bad line never loses
the others. Coordinates are in *original image pixels* of the displayed (EXIF-rotated)
image, ``x`` = column, ``y`` = row; they are checked against the decoded image size later,
in :mod:`auditor.data.annotations`.

Paths are resolved against the data root (the manifest's / COCO file's folder, or the
class-folder root). A path that leaves the root (``..`` that resolves outside, an absolute
path elsewhere, or a symlink whose target is elsewhere) is refused unless the caller passes
``allow_outside_root=True`` (CLI ``--allow-outside-root``).
"""

from __future__ import annotations

import collections.abc
import json
import math
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import DataError

if TYPE_CHECKING:
    from .segmentation import Segmentation

#: File extensions read as images by the folder layouts (compared case-insensitively).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Box:
    """One object: an axis-aligned box in original pixels, ``x0 < x1`` (columns), ``y0 < y1`` (rows).

    ``label``: the object's class name, or ``None`` (it then belongs to the record's label).
    ``segmentation``: the object's outline (COCO polygons or RLE,
    :mod:`auditor.data.segmentation`); when given, the object's pixels are the segmentation's,
    not the box's.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None
    segmentation: Segmentation | None = None


@dataclass(frozen=True)
class Record:
    """One image of a data set and its annotations.

    Attributes:
        id: unique within the data set (manifest ``id``, or the image path relative to the root).
        image: absolute path of the image file (not yet checked to exist: decoding reports that).
        label: class index into :attr:`Dataset.classes`, or ``None``.
        label_name: class name, or ``None`` when the data set has no class list.
        boxes: boxes in original pixels (may be empty).
        fixations: ``(x, y)`` fixation points in original pixels, or ``None``.
        gaze: absolute path of a gaze density map (image or ``.npy``), or ``None``.
        mask: absolute path of an object mask (image or ``.npy``) of the record's class, or ``None``.
        split: ``"support"`` / ``"query"`` (few-shot), or ``None``.
        meta: free data from the source (COCO ids, FewTURE split, manifest ``meta``).
        source: where the record came from, ``"<file>:<line>"`` or a folder path.
    """

    id: str
    image: Path
    label: int | None = None
    label_name: str | None = None
    boxes: tuple[Box, ...] = ()
    fixations: tuple[tuple[float, float], ...] | None = None
    gaze: Path | None = None
    mask: Path | None = None
    split: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    source: str = ""


@dataclass(frozen=True)
class RecordError:
    """An entry that could not be parsed; the run reports it as an error row and goes on."""

    id: str
    source: str
    image: Path | None
    reason: str


class RecordList(collections.abc.Sequence):
    """Records kept compact -- each as its source's JSON text and line number -- and rebuilt on access.

    A manifest of 50,000 lines held as :class:`Record` objects (paths, boxes, fixation tuples)
    costs ~2 KB a record; as its JSON line, the line's length. ``build(text, line)`` turns a
    stored entry back into the :class:`Record` it was validated as (the same value each time).
    Indexing returns a :class:`Record`, slicing a list, iterating rebuilds one at a time.
    """

    def __init__(self, build: Callable[[str, int], "Record"]):
        self._build = build
        self._texts: list[str] = []
        self._lines = array("q")

    def append(self, text: str, line: int) -> None:
        self._texts.append(text)
        self._lines.append(line)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._build(self._texts[i], self._lines[i]) for i in range(*index.indices(len(self)))]
        return self._build(self._texts[index], self._lines[index])

    def __iter__(self) -> Iterator["Record"]:
        for text, line in zip(self._texts, self._lines):
            yield self._build(text, line)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, collections.abc.Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RecordList({len(self)} records)"


@dataclass
class Dataset:
    """Records, per-entry errors and the class list of one data set.

    Attributes:
        records: parsed records, in source order (folders: sorted by class, then file name);
            a manifest's are a :class:`RecordList` (compact, rebuilt on access).
        errors: entries that could not be parsed.
        classes: class names; ``Record.label`` indexes this list (empty when unknown).
        root: folder that relative paths are resolved against.
        source: the file or folder the data set was read from.
    """

    records: Sequence[Record]
    errors: list[RecordError]
    classes: list[str]
    root: Path
    source: Path


class BadRecord(Exception):
    """Internal: why one entry is invalid. Sources turn it into a :class:`RecordError`."""


def absolute(path: str | Path) -> Path:
    """Absolute, lexically normalised path (symlinks are *not* resolved)."""
    return Path(os.path.abspath(path))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_path(raw: Any, root: Path, *, allow_outside: bool, what: str = "image") -> Path:
    """Resolve a path from a data source against ``root`` (absolute) and apply the root rule.

    Returns the absolute, normalised path. Raises :class:`BadRecord` for a non-string or
    empty path, or one outside ``root`` (lexically or after following symlinks) unless
    ``allow_outside``.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise BadRecord(f"{what} must be a non-empty path string, got {show_value(raw)}")
    if "\x00" in raw:
        raise BadRecord(f"{what} path {show_value(raw)} contains a NUL character")
    full = absolute(root / raw)  # an absolute raw path replaces root
    if allow_outside:
        return full
    try:
        real, real_root = full.resolve(), root.resolve()
    except (OSError, RuntimeError) as e:  # symlink loop, name too long
        raise BadRecord(f"{what} path {show_value(raw)} cannot be resolved ({e})") from None
    if not (_inside(full, root) and _inside(real, real_root)):
        raise BadRecord(
            f"{what} path {show_value(raw)} is outside the data root {root} (it resolves to {real}); "
            "pass --allow-outside-root (allow_outside_root=True) to read files outside it"
        )
    return full


def relative_id(path: Path, root: Path) -> str:
    """The default record id: ``path`` relative to ``root`` as posix, or the absolute posix path."""
    return path.relative_to(root).as_posix() if _inside(path, root) else path.as_posix()


def show_value(value: Any) -> str:
    """A short, JSON-like rendering of a raw value for messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def number(value: Any) -> float:
    """A finite float from a JSON number; :class:`ValueError` otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("non-numeric")
    try:
        f = float(value)
    except OverflowError:
        raise ValueError("too large") from None
    if not math.isfinite(f):
        raise ValueError("NaN or infinite")
    return f


def _coords(raw: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(raw, (list, tuple)):
        raise BadRecord(f"{what} {show_value(raw)} is not a list of {n} numbers")
    if len(raw) != n:
        raise BadRecord(f"{what} {show_value(raw)} has {len(raw)} values, expected {n}")
    try:
        return tuple(number(v) for v in raw)
    except ValueError as e:
        raise BadRecord(f"{what} {show_value(raw)} has a {e} coordinate") from None


def parse_box(raw: Any, index: int) -> Box:
    """``[x0, y0, x1, y1]`` or ``{"box": [...], "label": "cat"}`` -> :class:`Box` (``index`` is 1-based)."""
    what = f"box {index}"
    label = None
    if isinstance(raw, dict):
        extra = set(raw) - {"box", "label"}
        if "box" not in raw or extra:
            raise BadRecord(f"{what} {show_value(raw)} must be {{\"box\": [x0, y0, x1, y1], \"label\": name}}")
        label = raw.get("label")
        if label is not None and not isinstance(label, str):
            raise BadRecord(f"{what} label {show_value(label)} must be a string")
        raw = raw["box"]
    x0, y0, x1, y1 = _coords(raw, 4, what)
    if x1 <= x0:
        raise BadRecord(f"{what} {show_value(raw)} has x1 <= x0")
    if y1 <= y0:
        raise BadRecord(f"{what} {show_value(raw)} has y1 <= y0")
    return Box(x0, y0, x1, y1, label)


def parse_boxes(raw: Any) -> tuple[Box, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRecord(f"boxes must be a list of [x0, y0, x1, y1], got {show_value(raw)}")
    return tuple(parse_box(b, i) for i, b in enumerate(raw, 1))


def parse_fixations(raw: Any) -> tuple[tuple[float, float], ...] | None:
    """A list of ``[x, y]`` points; ``None`` or an empty list means no fixations."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRecord(f"fixations must be a list of [x, y] points, got {show_value(raw)}")
    points = tuple(_coords(p, 2, f"fixation {i}") for i, p in enumerate(raw, 1))
    return points or None  # type: ignore[return-value]


def check_classes(classes: Any, where: str) -> list[str]:
    """A class list must be unique strings; :class:`DataError` otherwise."""
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{where}: the class list must be a list of non-empty strings, got {show_value(classes)}")
    dup = sorted({c for c in classes if list(classes).count(c) > 1})
    if dup:
        raise DataError(f"{where}: the class list names {dup} more than once")
    return list(classes)


def lookup_label(label: Any, classes: Sequence[str]) -> tuple[int | None, str | None]:
    """A class index or name -> ``(index, name)``; an empty ``classes`` leaves indices unchecked."""
    if label is None:
        return None, None
    if isinstance(label, str):
        if label not in classes:
            known = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise BadRecord(f"unknown class name {show_value(label)} (classes: {known or 'none'})")
        return classes.index(label), label
    if isinstance(label, bool) or not isinstance(label, int):
        raise BadRecord(f"label must be a class index or a class name, got {show_value(label)}")
    if label < 0 or (classes and label >= len(classes)):
        raise BadRecord(f"label index {label} is out of range (0..{len(classes) - 1 if classes else 'n'})")
    return label, (classes[label] if classes else None)
