"""Data sets -> typed records, and per-image annotations -> arrays.

:func:`load_dataset` reads a manifest (``.jsonl`` / ``.csv``), a COCO instances file
(``.json``), class folders (``root/<class>/<image>``) or the FewTURE layout
(``root/{train,val,test}/<class>/<image>``) into a :class:`Dataset`; entries that cannot be
parsed become :class:`RecordError` rows instead of stopping the run.
:func:`load_annotations` turns a record's boxes / segmentations / mask file / fixations /
gaze into arrays checked against the decoded image size; the object mask is the target
class's objects, or every object (``mask_classes``). :func:`sample_episodes` draws few-shot episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .annotations import (MASK_CLASSES, Annotations, box_mask, check_mask_classes, fixation_map, load_annotations,
                          load_gaze_map, load_mask, mask_boxes, object_mask)
from .coco import read_coco
from .folders import is_fewture, read_class_folders, read_fewture
from .manifest import parse_jsonl, read_manifest
from .records import IMAGE_EXTENSIONS, Box, Dataset, Record, RecordError

__all__ = [
    "IMAGE_EXTENSIONS", "MASK_CLASSES", "Annotations", "Box", "Dataset", "Episode", "Record", "RecordError", "box_mask",
    "check_mask_classes", "fixation_map", "load_annotations", "load_dataset", "load_gaze_map", "load_mask",
    "mask_boxes", "object_mask", "parse_jsonl", "read_class_folders", "read_coco", "read_fewture", "read_manifest",
    "sample_episodes",
]


def load_dataset(path: str | Path, *, allow_outside_root: bool = False, classes: Sequence[str] | None = None,
                 split: str | None = None) -> Dataset:
    """Read a data set, choosing the reader from what ``path`` is.

    - ``*.jsonl`` / ``*.csv``: a manifest (:mod:`auditor.data.manifest`).
    - ``*.json``: a COCO instances file (:mod:`auditor.data.coco`).
    - a directory with a ``train``, ``val`` or ``test`` sub-folder: the FewTURE layout, one
      split (``split``; default ``"test"`` if present, else ``"val"``, else ``"train"``).
    - any other directory: class folders ``root/<class>/<image>``.

    Args:
        path: the manifest, COCO file or data folder.
        allow_outside_root: read files outside the data root (``..``, absolute paths,
            symlinks leaving it); refused per record by default.
        classes: the class list that labels index (see each reader for how it is combined
            with the class list the source itself gives).
        split: FewTURE split to read; only valid for that layout.

    Raises:
        DataError: a missing path, an unsupported file type, or a source that cannot be
            read at all. Bad individual entries are in ``Dataset.errors`` instead.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        if is_fewture(p):
            return read_fewture(p, split=split, allow_outside_root=allow_outside_root, classes=classes)
        if split is not None:
            raise DataError(f"split={split!r} only applies to the FewTURE layout (root/train|val|test/<class>/...); "
                            f"{p} has no such folders")
        return read_class_folders(p, allow_outside_root=allow_outside_root, classes=classes)
    if split is not None:
        raise DataError(f"split={split!r} only applies to a FewTURE folder, not to the file {p}")
    if suffix in (".jsonl", ".csv"):
        return read_manifest(p, allow_outside_root=allow_outside_root, classes=classes)
    if not p.exists():
        raise DataError(f"Data set not found: {p}")
    if suffix == ".json":
        return read_coco(p, allow_outside_root=allow_outside_root, classes=classes)
    raise DataError(f"Unsupported data set {p}: give a manifest (.jsonl or .csv), a COCO instances file (.json), "
                    "or a folder of class folders (root/<class>/<image>, or root/train|val|test/<class>/<image>)")


@dataclass
class Episode:
    """One few-shot episode.

    Attributes:
        support: ``n_way * k_shot`` records, class by class in the order of ``classes``,
            with ``split="support"``.
        query: ``n_way * n_query`` records, in the same class order, with ``split="query"``.
        classes: the dataset class indices of the episode; the episode-local label of a
            record is ``classes.index(record.label)``.
    """

    support: list[Record]
    query: list[Record]
    classes: list[int]


def sample_episodes(dataset: Dataset, *, n_way: int, k_shot: int, n_query: int, episodes: int,
                    seed: int) -> list[Episode]:
    """Draw ``episodes`` N-way K-shot episodes, deterministic for ``seed``.

    Uses ``np.random.default_rng(seed)``: per episode, ``n_way`` distinct classes among the
    labelled classes (sorted by index), then ``k_shot + n_query`` distinct records of each
    class (first ``k_shot`` -> support, rest -> query). Records without a label are ignored;
    every labelled class must have at least ``k_shot + n_query`` records.

    Raises:
        DataError: a non-positive count, fewer than ``n_way`` classes, or a class with too
            few images (named, with its count).
    """
    for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query), ("episodes", episodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    by_class: dict[int, list[Record]] = {}
    for r in dataset.records:
        if r.label is not None:
            by_class.setdefault(r.label, []).append(r)
    labels = sorted(by_class)
    if len(labels) < n_way:
        raise DataError(f"{n_way}-way episodes need {n_way} classes; {dataset.source} has {len(labels)} with images "
                        "(lower --n-way)")
    need = k_shot + n_query
    short = [f"{_name(dataset, c)} has {len(by_class[c])}" for c in labels if len(by_class[c]) < need]
    if short:
        raise DataError(f"{k_shot}-shot episodes with {n_query} queries need {need} images per class: "
                        + "; ".join(short) + " (lower --k-shot or --n-query)")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        chosen = [labels[i] for i in rng.choice(len(labels), size=n_way, replace=False)]
        support: list[Record] = []
        query: list[Record] = []
        for c in chosen:
            picks = [by_class[c][i] for i in rng.choice(len(by_class[c]), size=need, replace=False)]
            support += [replace(r, split="support") for r in picks[:k_shot]]
            query += [replace(r, split="query") for r in picks[k_shot:]]
        out.append(Episode(support, query, chosen))
    return out


def _name(dataset: Dataset, label: int) -> str:
    return f"class {label} ({dataset.classes[label]!r})" if 0 <= label < len(dataset.classes) else f"class {label}"
