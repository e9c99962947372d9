"""COCO instances files (``instances_*.json``): images, instances and categories.

- Classes: the category names sorted by category id (``Record.label`` indexes that list);
  with ``classes=`` every category name must be in the given list, which is used instead.
- Instances: ``bbox`` ``[x, y, w, h]`` -> :class:`Box` ``(x, y, x + w, y + h)`` labelled with
  the category name, carrying the instance's ``segmentation`` (polygons, uncompressed or
  compressed RLE: :mod:`auditor.data.segmentation`) when it has one; the instance's pixels
  are then the segmentation's (pycocotools' ``annToMask``), else the box's.
- Crowd instances (``iscrowd: 1``, usually an uncompressed RLE over a group of objects) are
  objects of their category like the others (a map on a crowd of people looks at people);
  as in COCO's evaluation, where they are not ground-truth instances, they do not choose
  the image's label unless the image has nothing else.
- Label of an image: the category of its largest non-crowd instance (by box area; the first
  one on a tie), else of its largest crowd instance; ``None`` for an image without instances.
  Its mask is that category's instances only (``mask_classes="target"``, the default of
  :func:`auditor.data.load_annotations`), or every instance with ``"any"``.
- Image paths: ``file_name`` relative to the JSON file's folder; if that file does not
  exist, ``images/<file_name>`` next to the JSON file; if neither exists the first is
  kept and decoding reports the missing file.
- Record ids are the ``file_name``; ``meta`` holds ``coco_id``, ``width`` and ``height``.

An image entry without ``id`` / ``file_name``, a box with a bad ``bbox`` (not 4 finite
numbers, ``w <= 0`` or ``h <= 0``), a malformed ``segmentation`` or an unknown
``category_id`` makes that image a
:class:`RecordError`; an annotation of an unknown image is a :class:`RecordError` of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .records import (BadRecord, Box, Dataset, Record, RecordError, show_value, absolute, check_classes, number,
                      resolve_path)
from .segmentation import parse_segmentation


def read_coco(path: str | Path, *, allow_outside_root: bool = False,
              classes: Sequence[str] | None = None) -> Dataset:
    """Read a COCO instances JSON file (see the module docstring for the conventions)."""
    path = absolute(path)
    data = _load_json(path)
    root = path.parent
    names, index = _categories(data.get("categories", []), classes, path)
    boxes: dict[Any, list[tuple[Box, int, bool]]] = {}  # image id -> (box, class index, crowd)
    bad: dict[Any, str] = {}  # image id -> first annotation problem
    errors: list[RecordError] = []
    image_ids = {im.get("id") for im in data["images"] if isinstance(im, dict) and _is_id(im.get("id"))}
    for j, ann in enumerate(data.get("annotations") or []):
        where = f"{path.name}:annotations[{j}]"
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or ann["image_id"] not in image_ids:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            errors.append(RecordError(f"annotation[{j}]", where, None,
                                      f"{where}: annotation of unknown image_id {show_value(image_id)}"))
            continue
        try:
            box, label = _box(ann, names, index)
        except BadRecord as e:
            bad.setdefault(ann["image_id"], f"{where}: {e}")
            continue
        boxes.setdefault(ann["image_id"], []).append((box, label, bool(ann.get("iscrowd"))))
    records: list[Record] = []
    seen: set[Any] = set()  # COCO image ids and file names already read
    for i, im in enumerate(data["images"]):
        where = f"{path.name}:images[{i}]"
        try:
            rec = _record(im, where, root, allow_outside_root, names, boxes, bad)
            if ("id", rec.meta["coco_id"]) in seen or ("file", rec.id) in seen:
                raise BadRecord(f"duplicate image id {show_value(rec.meta['coco_id'])} or file_name {show_value(rec.id)}")
        except BadRecord as e:
            image_id = im.get("file_name") if isinstance(im, dict) and isinstance(im.get("file_name"), str) else where
            errors.append(RecordError(str(image_id), where, None, f"{where}: {e}"))
            continue
        seen |= {("id", rec.meta["coco_id"]), ("file", rec.id)}
        records.append(rec)
    if not records and not errors:
        raise DataError(f"COCO file {path} lists no images")
    return Dataset(records, errors, names, root, path)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"COCO file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not a COCO instances file: expected a JSON object with \"images\", "
                        "\"annotations\" and \"categories\" lists")
    return data


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _categories(cats: Any, given: Sequence[str] | None, path: Path) -> tuple[list[str], dict[Any, int]]:
    """Class names and ``category_id -> class index``."""
    if not isinstance(cats, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), int)
                                             and isinstance(c.get("name"), str) for c in cats):
        raise DataError(f"{path}: \"categories\" must be a list of {{\"id\": int, \"name\": str}}")
    cats = sorted(cats, key=lambda c: c["id"])
    names = check_classes([c["name"] for c in cats], f"{path} categories") if cats else []
    if given is not None:
        given = check_classes(given, "classes= argument")
        missing = [n for n in names if n not in given]
        if missing:
            raise DataError(f"{path}: categories {missing} are not in the given class list {given}")
        names = given
    return names, {c["id"]: names.index(c["name"]) for c in cats}


def _box(ann: dict, names: list[str], index: dict[Any, int]) -> tuple[Box, int]:
    ann_id = ann.get("id", "?")
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise BadRecord(f"annotation {show_value(ann_id)}: bbox {show_value(bbox)} must be [x, y, w, h]")
    try:
        x, y, w, h = (number(v) for v in bbox)
    except ValueError as e:
        raise BadRecord(f"annotation {show_value(ann_id)}: bbox {show_value(bbox)} has a {e} value") from None
    if w <= 0 or h <= 0:
        raise BadRecord(f"annotation {show_value(ann_id)}: bbox {show_value(bbox)} has w <= 0 or h <= 0")
    cat = ann.get("category_id")
    if not _is_id(cat) or cat not in index:
        raise BadRecord(f"annotation {show_value(ann_id)}: unknown category_id {show_value(cat)}")
    label = index[cat]
    try:
        seg = parse_segmentation(ann.get("segmentation"))
    except BadRecord as e:
        raise BadRecord(f"annotation {show_value(ann_id)}: {e}") from None
    return Box(x, y, x + w, y + h, names[label], seg), label


def _record(im: Any, where: str, root: Path, allow_outside: bool, names: list[str],
            boxes: dict[Any, list[tuple[Box, int, bool]]], bad: dict[Any, str]) -> Record:
    if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
        raise BadRecord(f"image entry {show_value(im)} needs an \"id\" and a \"file_name\"")
    if im["id"] in bad:
        raise BadRecord(bad[im["id"]])
    file_name = im["file_name"]
    image = resolve_path(file_name, root, allow_outside=allow_outside)
    if not _exists(image) and not Path(file_name).is_absolute():
        alt = resolve_path(f"images/{file_name}", root, allow_outside=allow_outside)
        image = alt if _exists(alt) else image
    own = boxes.get(im["id"], [])
    label = None
    if own:  # the largest non-crowd box, else the largest crowd box; max() keeps the first on a tie
        _, label, _ = max(own, key=lambda t: (not t[2], (t[0].x1 - t[0].x0) * (t[0].y1 - t[0].y0)))
    meta = {"coco_id": im["id"], "width": im.get("width"), "height": im.get("height")}
    return Record(id=file_name, image=image, label=label, label_name=None if label is None else names[label],
                  boxes=tuple(b for b, _, _ in own), meta=meta, source=where)
