"""Crash safety and ``auditor run --resume``.

A run writes ``run.json`` into ``--out`` before it scores anything: a fingerprint of every
setting that decides the rows and maps (the data set's records, the model and a sha256 of
its weights, the checkpoint's sha256, methods, preprocessing, target, mask classes, seed,
batch size, ``--save-maps``). Rows go to ``rows.jsonl`` batch by batch and each batch's maps to a part
under ``out/.parts/`` (:class:`auditor.savers.PartedMapWriter`), the part first.

After a crash (even ``kill -9``), ``--resume`` checks the fingerprint (a difference is a
:class:`~auditor.errors.UsageError` naming the settings), reads ``rows.jsonl`` (a torn last
line is ignored), keeps the finished batches whose maps are complete, and the run goes on
from the first unfinished batch. Batches keep their boundaries, so the results are those of
an uninterrupted run: ``results.json`` is identical apart from ``timing``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import UsageError
from .io import write_text
from .savers import PartedMapWriter

RUN_FILE = "run.json"
ROWS_FILE = "rows.jsonl"
FINGERPRINT_VERSION = 1


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's state_dict (names, dtypes, shapes, bytes), in key order.

    A tensor's bytes go to the hash through the buffer protocol, without a copy (hashlib
    reads the memory: ~90 MB of ViT-S/16 weights hash in ~50 ms, 10% less than with a copy)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def dataset_sha256(dataset: Any) -> str:
    """sha256 of what a data set resolved to: records (with image file sizes), errors, classes.

    The hash of ``json.dumps({"classes", "errors", "records"}, sort_keys=True)``, fed record by
    record (the same bytes, without holding every record's list at once)."""
    h = hashlib.sha256()
    errors = [[e.id, e.source, e.reason] for e in dataset.errors]
    h.update(f'{{"classes": {json.dumps(list(dataset.classes))}, "errors": {json.dumps(errors)}, "records": ['.encode())
    for i, r in enumerate(dataset.records):
        item = [r.id, str(r.image), _size(r.image), r.label, r.label_name,
                [[b.x0, b.y0, b.x1, b.y1, b.label] + ([repr(b.segmentation)] if b.segmentation else []) for b in r.boxes],
                None if r.fixations is None else [list(p) for p in r.fixations],
                None if r.gaze is None else [str(r.gaze), _size(r.gaze)], r.split] \
            + ([[str(r.mask), _size(r.mask)]] if r.mask is not None else [])
        h.update(((", " if i else "") + json.dumps(item, sort_keys=True)).encode())
    h.update(b"]}")
    return h.hexdigest()


def fingerprint(*, dataset: Any, model: dict[str, Any], weights: str, methods: dict[str, Any],
                preprocessing: dict[str, Any], target: str, seed: int, batch_size: int,
                save_maps: bool) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues."""
    ck = model.get("checkpoint")
    return {
        "version": FINGERPRINT_VERSION,
        "data": str(dataset.source), "dataset_sha256": dataset_sha256(dataset),
        "model": {"name": model.get("name"), "kwargs": model.get("kwargs"),
                  "checkpoint_sha256": None if ck is None else ck.get("sha256")},
        "weights_sha256": weights, "methods": methods, "preprocessing": preprocessing, "target": target,
        "seed": seed, "batch_size": batch_size, "save_maps": save_maps,
    }


def write_run_file(out: Path, fp: dict[str, Any]) -> None:
    write_text(out / RUN_FILE, json.dumps({"fingerprint": fp}, indent=1, sort_keys=True) + "\n")


_WHAT = {"data": "the data set path", "dataset_sha256": "the data set's records or image files",
         "model": "the model or its checkpoint", "weights_sha256": "the model's weights",
         "methods": "the methods", "preprocessing": "the preprocessing (image size, resize or centre crop, interpolation, mean, std)",
         "target": "the target", "mask_classes": "--mask-classes", "seed": "the seed", "batch_size": "--batch-size",
         "save_maps": "--save-maps", "version": "the attention-auditor version that wrote it"}


def check_fingerprint(out: Path, fp: dict[str, Any]) -> None:
    """Raise :class:`UsageError` unless ``out/run.json`` holds the same fingerprint."""
    path = out / RUN_FILE
    try:
        old = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"Cannot resume: {path} is unreadable ({type(e).__name__}: {e}); "
                         "pass --overwrite to start again.") from None
    fresh = json.loads(json.dumps(fp))  # tuples -> lists, as stored
    differ = [k for k in sorted(set(old) | set(fresh)) if old.get(k) != fresh.get(k)]
    if differ:
        details = "; ".join(f"{_WHAT.get(k, k)} ("
                            + ", ".join(f"{path}: was {_short(a)}, now {_short(b)}"
                                        for path, a, b in _leaves(old.get(k), fresh.get(k), k)[:4]) + ")"
                            for k in differ)
        raise UsageError(f"Cannot resume the audit in {out}: its settings differ from this run's: {details}. "
                         "Resume with the same settings, or pass --overwrite to start again.")


def _leaves(a: Any, b: Any, path: str) -> list[tuple[str, Any, Any]]:
    """Where two fingerprint values differ, as ``(dotted path, old, new)``: nested dicts are
    followed down to the keys that changed (``preprocessing.resize``), not shown whole."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [leaf for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)
                for leaf in _leaves(a.get(k), b.get(k), f"{path}.{k}")]
    return [(path, a, b)]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 70 else text[:67] + "..."


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of ``rows.jsonl``; a torn (unterminated or unparsable) last line is dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")[:-1]  # the piece after the last newline is torn (or empty)
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("not a row object")
        except ValueError as e:
            if i == len(lines):
                break
            raise UsageError(f"Cannot resume: {path}:{i} is not a result row ({e}); "
                             "pass --overwrite to start again.") from None
        rows.append(row)
    return rows


def resume_point(out: Path, records: Sequence[Any], errors: Sequence[Any], batch_size: int,
                 writer: PartedMapWriter) -> tuple[int, list[dict[str, Any]]]:
    """``(start, rows)``: the index of the first record to score, and the finished records' rows.

    Only whole batches count, and only those whose map parts are complete; parts of later
    batches are removed.
    """
    path = out / ROWS_FILE
    rows = read_rows(path)
    n_err = len(errors)
    if len(rows) < n_err:
        rows = []
    elif [r["id"] for r in rows[:n_err]] != [e.id for e in errors]:
        raise UsageError(f"Cannot resume: {path} does not start with this data set's error rows; "
                         "pass --overwrite to start again.")
    done = rows[n_err:]
    for i, row in enumerate(done):
        if i >= len(records) or row["id"] != records[i].id:
            raise UsageError(f"Cannot resume: {path} row {n_err + i + 1} (id {row['id']!r}) is not this data set's "
                             f"record {i + 1}; pass --overwrite to start again.")
    start = len(done) // batch_size * batch_size
    for s in range(0, start, batch_size):
        if not writer.has(s):
            start = s
            break
    writer.discard_from(start)
    return start, done[:start]
