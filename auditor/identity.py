"""Are two audits about the same images? (``--baseline``, ``auditor compare``)

A comparison pairs rows by id; two runs on different data sets that share file names would
pair images that are not the same. :func:`dataset_identity` fingerprints what a data set
resolved to -- record ids, image file sizes, labels and annotations, never absolute paths
(the same data in another folder or on another machine is the same data) -- and
:func:`check_same_data` refuses two runs whose data, target or preprocessing differ, naming
what differs (``--allow-different-data`` skips it).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

from .errors import UsageError


def _size(path: Any) -> int | None:
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return None


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """``{"records", "sha256"}``: the number of records and a hash of their ids, image sizes,
    labels and annotations (in id order).

    The hash is of the JSON list of the items sorted; it is fed item by item, so 50,000 records
    are never all rebuilt at once (the same bytes as dumping the sorted list whole)."""
    records = dataset.records
    ids = [r.id for r in records]
    if len(set(ids)) == len(ids):  # the usual case: sorting the items is sorting by id
        order = sorted(range(len(ids)), key=ids.__getitem__)
        items: Any = (_item(records[i]) for i in order)
    else:  # equal ids: the rest of each item decides their order
        items = iter(sorted(_item(r) for r in records))
    h = hashlib.sha256(b"[")
    for i, item in enumerate(items):
        h.update(((", " if i else "") + json.dumps(item, sort_keys=True, default=str)).encode())
    h.update(b"]")
    return {"records": len(ids), "sha256": h.hexdigest()}


def _item(r: Any) -> list[Any]:
    return [r.id, _size(r.image), r.label_name if r.label_name is not None else r.label,
            [[b.x0, b.y0, b.x1, b.y1, b.label] for b in r.boxes],
            None if r.fixations is None else [list(p) for p in r.fixations],
            None if r.gaze is None else _size(r.gaze)]


def rows_identity(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A weaker identity for results written before ``data_identity`` existed: ids and labels."""
    items = sorted([str(r.get("id")), r.get("label_name") if r.get("label_name") is not None else r.get("label")]
                   for r in rows)
    return {"records": len(items), "ids_sha256": hashlib.sha256(json.dumps(items).encode()).hexdigest()}


def _target(settings: Mapping[str, Any]) -> Any:
    t = settings.get("target")
    return t.get("kind") if isinstance(t, Mapping) else t


#: what results written before ``resize`` existed did (a squash resize in torch)
_PREPROCESSING_DEFAULTS = {"resize": "squash", "resampler": "torch"}


def _preprocessing(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The preprocessing that decides what the model saw: older results' defaults filled in,
    ``source`` (where the settings were read from) left out."""
    p = settings.get("preprocessing")
    if p is None:
        return None
    out = {**_PREPROCESSING_DEFAULTS, **p}
    out.pop("source", None)
    return out


def differences(a: Mapping[str, Any], b: Mapping[str, Any], *, preprocessing: bool = True) -> list[str]:
    """What differs between two results' data, target, masks, scoring resolution and
    (``preprocessing``) preprocessing; empty when they are comparable."""
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    out = []
    ia, ib = sa.get("data_identity"), sb.get("data_identity")
    if ia is None or ib is None:  # an older results.json: compare the rows' ids and labels
        if "rows" in a and "rows" in b:
            ia, ib = rows_identity(a["rows"]), rows_identity(b["rows"])
    if ia != ib:
        na, nb = (ia or {}).get("records"), (ib or {}).get("records")
        out.append(f"the data ({na} vs {nb} records" + (", same count but other ids, files, labels or annotations"
                                                         if na == nb else "") + ")")
    if _target(sa) != _target(sb):
        out.append(f"the target ({_target(sa)} vs {_target(sb)})")
    ma, mb = sa.get("mask_classes", "any"), sb.get("mask_classes", "any")  # results before masks: every object
    if ma != mb:
        out.append(f"the objects that form the masks (--mask-classes {ma} vs {mb})")
    za, zb = sa.get("score_size"), sb.get("score_size")  # results before --score-size: each image's own size
    if za != zb:  # a map scored at 128 px is not the same measurement as at full size: pairs would be biased
        out.append(f"the scoring resolution (--score-size {za or 'off'} vs {zb or 'off'})")
    pa, pb = _preprocessing(sa), _preprocessing(sb)
    if preprocessing and pa != pb:
        keys = sorted(k for k in set(pa or {}) | set(pb or {}) if (pa or {}).get(k) != (pb or {}).get(k))
        out.append("the preprocessing (" + "; ".join(f"{k}: {(pa or {}).get(k)} vs {(pb or {}).get(k)}" for k in keys) + ")")
    return out


def check_same_data(a: Mapping[str, Any], b: Mapping[str, Any], *, names: tuple[str, str] = ("A", "B"),
                    preprocessing: bool = True) -> None:
    """Raise :class:`UsageError` (exit 2) when ``a`` and ``b`` (results data) are not comparable."""
    diff = differences(a, b, preprocessing=preprocessing)
    if diff:
        raise UsageError(f"{names[0]} and {names[1]} were not audited on the same terms: they differ in "
                         + "; ".join(diff) + ". Their images would pair by id alone. Audit both on the same data "
                         "with the same target, preprocessing and --score-size, or pass --allow-different-data if this is intended.")
