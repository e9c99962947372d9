"""The unit of work of a run (a batch, or a few-shot episode) and the engines that run units.

:class:`UnitWork` is everything one unit needs -- model, methods, target, scoring settings --
and nothing of the run's bookkeeping, so that any engine can run it: the in-process one
(:func:`auditor.batches.local_units`: decoding threads, scoring overlapped with the next
model pass), forked CPU workers (:mod:`auditor.process_engine`) or Ray actors
(:mod:`auditor.ray_engine`). :func:`engine_units` picks the one the run chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .batches import Ready, load_item, local_units, start_batch
from .episodes import process_episode
from .savers import PartedMapWriter
from .target import Target

FAITH_PARTS = ".faithfulness-parts"  # one .npz of curves per batch, merged into results.json at the end


@dataclass
class UnitWork:
    """The run's work for one unit (a batch, or a few-shot episode): ``(rows, target kind)``.

    Picklable, so that the Ray engine can hand it (with the model) to its actors. ``part``
    receives the unit's maps; faithfulness curves go to ``root/.faithfulness-parts/``.
    """

    model: torch.nn.Module
    methods: list
    target: Target
    device: torch.device
    unit: int
    plan: Any = None
    faith: Any = None
    amp: bool = False
    mask_classes: str = "target"
    score_size: int | None = None

    def __call__(self, i: int, items: list, part: Any, root: Path) -> list[dict[str, Any]]:
        return self.start(i, items, part, root)()

    def run(self, i: int, records: Sequence[Any], preprocess: Any, root: Path, *, full: bool) -> list[dict[str, Any]]:
        """Unit ``i`` whole, from its ``records``: decoded here, its map part written under ``root``
        (a worker process's or Ray actor's unit: nothing to overlap with)."""
        items = [load_item(r, preprocess, self.mask_classes) for r in records]
        with PartedMapWriter(root, full=full).batch(i * self.unit) as part:
            return self(i, items, part, root)

    def start(self, i: int, items: list, part: Any, root: Path) -> Callable[[], list[dict[str, Any]]]:
        """Run unit ``i``'s model passes now; the returned function finishes it (the scoring).

        A decoded record the target cannot explain (no label) becomes an error row here, after
        decoding, so that a missing or corrupt file is reported as such first."""
        for it in items:
            it.error = it.error or self.target.record_problem(it.record)
        if self.plan is not None:
            return Ready(process_episode(i, self.plan.episodes[i], items, self.model, self.methods,
                                         target=self.target, device=self.device, writer=part, amp=self.amp,
                                         classifier=self.plan.classifier, score_size=self.score_size))
        faith_part = root / FAITH_PARTS / f"{i * self.unit}.npz"
        if self.faith is not None:
            faith_part.parent.mkdir(parents=True, exist_ok=True)
        return start_batch(items, self.model, self.methods, target=self.target, device=self.device, writer=part,
                           faith=self.faith, faith_part=faith_part, amp=self.amp, score_size=self.score_size)


def engine_units(engine: tuple[str, int], units: Sequence[Sequence[Any]], first: int, preprocess: Any, work: UnitWork,
                 writer: PartedMapWriter, out: Path, *, full: bool, gpu: bool) -> Iterator[list[dict[str, Any]]]:
    """The rows of units ``first, first + 1, ...`` in order, run by ``engine`` = ``(name, workers)``
    (:func:`auditor.process_engine.choose`); each unit's map part is in place before its rows come."""
    name, workers = engine
    if name == "ray":
        from .ray_engine import run_units

        return run_units(units, first, preprocess, work, out, full=full, workers=workers, gpu=gpu)
    if name == "processes":
        from .process_engine import run_units

        return run_units(units, first, preprocess, work, out, full=full, workers=workers)
    return local_units(units, first, preprocess, work, writer, out)
