"""Decoding images ahead of the model, and one pass's rows.

:func:`stream` decodes the records of each unit of work (a batch, or a few-shot episode's
queries and support images) in background threads, two units ahead, and yields them as
:class:`Item` lists in order. :func:`start_batch` runs every method on a batch and turns
the pass into one row per image (:func:`fill_rows`); :mod:`auditor.episodes` reuses
:func:`fill_rows` for episodes. :func:`local_units` is the in-process engine: it scores one
unit in a second thread while the next unit's pass runs.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .data import load_annotations
from .errors import AuditorError
from .images import load_image
from .layers import score_layers
from .methods import compute_maps
from .methods.engine import PassResult
from .savers import MapWriter
from .scoring import score_item, score_shape, shrink_annotations
from .target import Target


@dataclass
class Item:
    """A record, decoded: ``image`` ``[H, W, 3]`` uint8, ``inputs`` ``[3, h, w]``, or ``error``;
    ``region``: the part of the image the model saw (a centre crop, fractions ``(x0, y0, x1, y1)``)
    or None (all of it)."""

    record: Any
    image: np.ndarray | None = None
    annotations: Any = None
    inputs: torch.Tensor | None = None
    error: str | None = None
    region: tuple[float, float, float, float] | None = None


def load_item(record: Any, preprocess, mask_classes: str = "target") -> Item:
    try:
        image = load_image(record.image)
        ann = load_annotations(record, image.shape[:2], mask_classes=mask_classes)
        region = preprocess.region(image.shape[:2]) if hasattr(preprocess, "region") else None
        return Item(record, image, ann, preprocess(image)[0], region=region)
    except AuditorError as e:
        return Item(record, error=str(e))


def stream(units: Sequence[Sequence[Any]], preprocess, workers: int = 2,
           mask_classes: str = "target") -> Iterator[list[Item]]:
    """Each unit's records decoded, in order; decoding runs ahead by at most two units."""
    with ThreadPoolExecutor(max_workers=workers, initializer=one_torch_thread) as pool:
        pending: list[list[Future]] = []
        for unit in units:
            pending.append([pool.submit(load_item, r, preprocess, mask_classes) for r in unit])
            if len(pending) > 2:
                yield [f.result() for f in pending.pop(0)]
        for futures in pending:
            yield [f.result() for f in futures]


def one_torch_thread() -> None:
    """Thread-pool initializer: this thread's torch ops run on it alone.

    Each thread that calls torch gets its own OpenMP team (``torch.get_num_threads()`` threads);
    a decoding or scoring thread's team of two would fight the model's team for the cores (on 2
    cores a 256 px upsampling took 16 ms instead of 0.5 ms). The setting is per thread: the
    model's thread keeps its threads."""
    torch.set_num_threads(1)


class Chunks(Sequence):
    """``records`` in units of ``size``, each sliced when it is asked for: a data set of 50,000
    compact records (:class:`auditor.data.records.RecordList`) is never rebuilt all at once.
    ``chunks[k:]`` is the chunks from the ``k``-th on."""

    def __init__(self, records: Sequence[Any], size: int, first: int = 0):
        self.records, self.size, self.first = records, size, first

    def __len__(self) -> int:
        return max(0, -(-len(self.records) // self.size) - self.first)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, _, step = index.indices(len(self))
            if step != 1 or index.stop is not None:
                return [self[i] for i in range(*index.indices(len(self)))]
            return Chunks(self.records, self.size, self.first + start)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        at = (self.first + index) * self.size
        return self.records[at:at + self.size]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def chunks(records: Sequence[Any], size: int) -> Chunks:
    return Chunks(records, size)


def base_row(it: Item) -> dict[str, Any]:
    r = it.record
    return {"id": r.id, "image": str(r.image), "label": r.label, "label_name": r.label_name, "split": r.split,
            "source": r.source, "target": None, "target_name": None, "prediction": None, "prediction_name": None,
            "prediction_score": None, "metrics": {}, "map_status": {}, "error": it.error}


def fill_rows(ok: Sequence[Item], res: PassResult, rows: dict[int, dict[str, Any]], methods,
              writer: MapWriter | None, *, target: Target, class_output: bool, score_size: int | None = None) -> None:
    """Write a pass's targets, predictions (``class_output``: the output is class logits),
    metrics, map problems and per-layer scores into the rows of the ``ok`` items. Targets
    and predictions are the model's class indices, named with the model's class names.
    ``score_size``: score at most this many pixels on the longest side (:func:`~auditor.scoring.score_shape`)."""
    modes = {m.name: m.normalization for m in methods}
    probs = res.output.softmax(-1) if class_output else None
    for i, it in enumerate(ok):
        row = rows[id(it)]
        row["target"] = res.targets[i]
        row["target_name"] = target.model_name(res.targets[i])
        if probs is not None:
            row["prediction"] = int(probs[i].argmax())
            row["prediction_name"] = target.model_name(row["prediction"])
            row["prediction_score"] = float(probs[i].max())
        at = score_shape(it.image.shape[:2], score_size)
        ann = shrink_annotations(it.annotations, at)
        row["metrics"], row["map_status"] = score_item(it.record.id, it.image.shape[:2], ann,
                                                        {m: r.maps[i] for m, r in res.maps.items()}, modes, writer,
                                                        scored_at=at, region=it.region)
        layered = score_layers({m: r.extras for m, r in res.maps.items()}, i, ann.mask, modes, region=it.region)
        if layered:
            row["per_layer"] = layered
        for m, r in res.maps.items():  # integrated gradients: |sum(attributions) - (score(x) - score(baseline))|
            if "completeness_error" in r.extras:  # its sign says nothing: the row, summary and gate read the size
                row["metrics"].setdefault(m, {})["completeness_error"] = abs(float(r.extras["completeness_error"][i]))


def start_batch(items: list[Item], model, methods, *, target: Target, device,
                writer: MapWriter | None, faith: Any = None, faith_part: Path | None = None,
                amp: bool = False, score_size: int | None = None) -> Callable[[], list[dict[str, Any]]]:
    """Rows for a batch, in two steps: the model's pass runs now, and the returned function
    scores the maps and returns the rows.
    The scoring needs no model, so :func:`local_units` calls it in a second thread while the
    next batch's pass runs.

    ``faith``: :class:`~auditor.faithfulness.FaithfulnessOptions`; the checks run after the
    batch's maps (reusing its inputs and raw maps) and run the model, so then everything runs
    now and the function only returns the result. Their values join ``metrics[method]`` and
    their curves go to ``faith_part`` (:func:`auditor.faithfulness.save_part`).
    """
    ok = [it for it in items if it.error is None]
    rows: dict[int, dict[str, Any]] = {id(it): base_row(it) for it in items}
    if not ok:
        return Ready([rows[id(it)] for it in items])
    x = torch.stack([it.inputs for it in ok]).to(device)
    res = compute_maps(model, x, methods, target=target.engine_spec([it.record for it in ok]), amp=amp)

    def finish() -> list[dict[str, Any]]:
        fill_rows(ok, res, rows, methods, writer, target=target, class_output=target.kind in ("label", "predicted"),
                  score_size=score_size)
        return [rows[id(it)] for it in items]

    if faith is None or not faith.checks:
        return finish
    from .faithfulness import run_checks, save_part

    result = finish()
    checked = run_checks(model, x, res, methods, faith)
    for i, it in enumerate(ok):
        for method, values in checked.metrics[i].items():
            rows[id(it)]["metrics"].setdefault(method, {}).update(values)
    if faith_part is not None:
        save_part(checked, faith_part)
    return Ready(result)


class Ready:
    """A unit already finished: calling it returns its result (nothing left to overlap)."""

    def __init__(self, result: Any):
        self.result = result

    def __call__(self) -> Any:
        return self.result


def local_units(units: Sequence[Sequence[Any]], first: int, pre, work: Any, writer: Any,
                out: Path) -> Iterator[list[dict[str, Any]]]:
    """The in-process engine: images decoded ahead in threads; unit i is scored in a second
    thread while unit i + 1's model pass runs (scoring is numpy, mostly one core: it fills
    the core torch leaves idle). Each unit's maps are complete before its rows are yielded;
    on any failure (or Ctrl-C, or the consumer stopping) unfinished parts are discarded."""
    pending: tuple[Any, Future] | None = None  # the unit being scored in the background
    current = None  # the unit whose part is open in this thread
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=1, initializer=one_torch_thread) as scorer:
        try:
            for i, items in enumerate(stream(units[first:], pre, mask_classes=work.mask_classes), start=first):
                current = writer.batch(i * work.unit)
                current.__enter__()
                finish = work.start(i, items, current, out)
                if pending is not None:
                    previous, pending = pending, None
                    yield _settle(*previous)
                part, current = current, None
                if isinstance(finish, Ready):  # nothing to overlap: done now, so a crash later keeps it
                    part.__exit__(None, None, None)
                    yield finish()
                else:
                    pending = part, scorer.submit(finish)
            if pending is not None:
                previous, pending = pending, None
                yield _settle(*previous)
        except BaseException as e:
            if pending is not None:
                _wait(pending[1])  # its scoring must stop writing to its part before the part is discarded
                pending[0].__exit__(type(e), e, e.__traceback__)
            if current is not None:
                current.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            torch.set_num_threads(threads)  # the default of threads started later (the workers set 1)


def _settle(part: Any, future: Future) -> list[dict[str, Any]]:
    """The unit's rows once its scoring is done and its map part renamed into place."""
    try:
        result = future.result()
    except BaseException as e:  # a scoring error, or Ctrl-C while waiting for it
        _wait(future)
        part.__exit__(type(e), e, e.__traceback__)
        raise
    part.__exit__(None, None, None)
    return result


def _wait(future: Future) -> None:
    """Until ``future`` has finished (at most one batch's scoring), even through a second Ctrl-C."""
    while not future.done():
        try:
            futures_wait([future])
        except KeyboardInterrupt:
            continue
