"""Folder layouts: ``root/<class>/<image>`` class folders, and the FewTURE split layout.

Class folders (torchvision ``ImageFolder`` order): classes are the sorted names of the
non-hidden sub-folders of ``root`` (an empty class folder keeps its index); images are the
files directly inside each class folder whose extension is in
:data:`~auditor.data.records.IMAGE_EXTENSIONS` (any case), sorted by name; hidden files
and deeper folders are ignored. Record ids are ``"<class>/<file>"``, labels the class index.
Images and class folders that are symlinks resolving outside ``root`` become record errors
unless ``allow_outside_root``.

FewTURE layout: ``root/{train,val,test}/<class>/<image>``; a directory with any of those
three sub-folders is read this way, one split at a time (``split=``; default ``"test"`` if
present, else ``"val"``, else ``"train"``). Each split is a class-folder data set of its own
(few-shot splits have disjoint classes); records carry ``meta["fewture_split"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DataError
from .records import IMAGE_EXTENSIONS, BadRecord, Dataset, Record, RecordError, absolute, check_classes, resolve_path

FEWTURE_SPLITS = ("train", "val", "test")
_DEFAULT_ORDER = ("test", "val", "train")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def is_fewture(root: Path) -> bool:
    """Whether ``root`` has a ``train``, ``val`` or ``test`` sub-folder."""
    return any((root / s).is_dir() for s in FEWTURE_SPLITS)


def read_class_folders(root: str | Path, *, allow_outside_root: bool = False, classes: Sequence[str] | None = None,
                       meta: dict | None = None, source: Path | None = None) -> Dataset:
    """Read ``root/<class>/<image>``.

    Args:
        root: the folder holding one sub-folder per class.
        allow_outside_root: read symlinks whose targets lie outside ``root``.
        classes: the class list to index labels by (default: the sorted folder names);
            every folder must be named in it.
        meta: copied into every record's ``meta``.
        source: recorded as ``Dataset.source`` (default ``root``).

    Raises:
        DataError: no class folders, no images, or a folder missing from ``classes``.
    """
    root = absolute(root)
    try:
        folders = sorted(p.name for p in root.iterdir() if _visible(p) and p.is_dir())
    except OSError as e:
        raise DataError(f"Cannot list the data folder {root}: {e}") from None
    if not folders:
        raise DataError(f"{root} has no class folders: expected root/<class>/<image> "
                        f"(or root/train|val|test/<class>/<image>)")
    class_list = folders if classes is None else check_classes(classes, "classes= argument")
    missing = [f for f in folders if f not in class_list]
    if missing:
        raise DataError(f"{root}: class folder(s) {missing} are not in the given class list {class_list}")
    records: list[Record] = []
    errors: list[RecordError] = []
    for name in folders:
        for rel in _images(root, name):
            where = (root / rel).as_posix()
            try:
                image = resolve_path(rel, root, allow_outside=allow_outside_root)
            except BadRecord as e:
                errors.append(RecordError(rel, where, absolute(root / rel), f"{where}: {e}"))
                continue
            records.append(Record(id=rel, image=image, label=class_list.index(name), label_name=name,
                                  meta=dict(meta or {}), source=where))
    if not records and not errors:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{root} has class folders {folders} but no images in them (extensions: {exts})")
    return Dataset(records, errors, class_list, root, source or root)


def _images(root: Path, folder: str) -> list[str]:
    """``"<folder>/<file>"`` for each image file directly inside ``root/folder``, sorted by name."""
    try:
        entries = sorted((root / folder).iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"Cannot list the class folder {root / folder}: {e}") from None
    return [f"{folder}/{p.name}" for p in entries
            if _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()]


def default_split(root: Path) -> str:
    """The FewTURE split read when none is named: ``test``, else ``val``, else ``train``."""
    for s in _DEFAULT_ORDER:
        if (root / s).is_dir():
            return s
    raise DataError(f"{root} has none of the FewTURE split folders {', '.join(FEWTURE_SPLITS)}")


def read_fewture(root: str | Path, *, split: str | None = None, allow_outside_root: bool = False,
                 classes: Sequence[str] | None = None) -> Dataset:
    """Read one split of ``root/{train,val,test}/<class>/<image>`` (see the module docstring)."""
    root = absolute(root)
    split = default_split(root) if split is None else split
    present = [s for s in FEWTURE_SPLITS if (root / s).is_dir()]
    if split not in present:
        raise DataError(f"{root}: no split folder {split!r}; this data set has {', '.join(present) or 'none'}")
    return read_class_folders(root / split, allow_outside_root=allow_outside_root, classes=classes,
                              meta={"fewture_split": split}, source=root)
