"""``auditor run --engine ray``: the same per-unit work, run by a Ray Data actor pool.

Install with ``pip install 'attention-auditor[ray]'``. The data set is parsed on the driver
by :func:`auditor.data.load_dataset` (one parser for every format, so the error rows are
the local run's), and ``ray.data.from_items`` holds the indices of the units of work (a batch,
or a few-shot episode). ``map_batches`` sends them to a pool of actors, each holding one copy
of the model (``--workers`` actors in an ``ActorPoolStrategy``, one CPU each, or one GPU each
with ``--device cuda``).
An actor decodes its unit's images, runs the run's own per-unit function
(:class:`auditor.units.UnitWork`), writes the unit's map part into a private temporary
folder and returns the rows and the part files' bytes; the driver writes them under ``out``
exactly as the local engine does, in unit order. So the results files, the resume files and
``--resume`` are the local run's (the values equal the local run's up to floating-point
reduction order: each actor uses one torch thread; at equal thread counts they are
bit-identical); Ray adds no scheduler, queue or protocol of our own. A bad input inside an
actor (an :class:`~auditor.errors.AuditorError`) reaches the CLI as itself, with its exit code.

Ray is started locally (``num_cpus=workers``) unless ``RAY_ADDRESS`` points at a cluster
(then the part files travel back as bytes: no shared file system is needed).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import UsageError
from .io import atomic_path


def require_ray():
    """The ray module, or a UsageError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray Data: pip install 'attention-auditor[ray]' "
                         "(or pip install 'ray[data]'); or use --engine local") from None
    return ray


class _Actor:
    """One Ray actor: holds the per-unit work (and so the model); runs units given by index."""

    def __init__(self, shipped, full: bool, threads: int, gpu: bool):
        import dataclasses

        import ray
        import torch

        torch.set_num_threads(threads)
        units, preprocess, work = ray.get(shipped) if isinstance(shipped, ray.ObjectRef) else shipped
        if gpu:  # the model travels on the CPU; Ray shows each actor its own GPU as cuda:0
            work = dataclasses.replace(work, device=torch.device("cuda"))
            work.model.to(work.device)
        self.units, self.preprocess, self.work, self.full = units, preprocess, work, full

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .errors import AuditorError

        results = []
        for i in batch["unit"].tolist():
            try:
                with tempfile.TemporaryDirectory(prefix="auditor-ray-") as tmp:
                    stage = Path(tmp)
                    rows = self.work.run(i, self.units[i], self.preprocess, stage, full=self.full)
                    files = {str(p.relative_to(stage)): p.read_bytes() for p in sorted(stage.rglob("*")) if p.is_file()}
                results.append(pickle.dumps((None, rows, files)))
            except AuditorError as e:  # a bad input: the driver raises it as itself (Ray would wrap it)
                results.append(pickle.dumps((e, None, None)))
        return {"unit": batch["unit"], "result": np.array(results, dtype=object)}


def run_units(units: Sequence[Sequence[Any]], first: int, preprocess, work: Any, out: Path, *,
              full: bool, workers: int = 2, gpu: bool = False) -> Iterator[list[dict]]:
    """The rows of units ``first, first + 1, ...`` in order; their map parts
    (and faithfulness parts) are in place under ``out`` before each is yielded."""
    ray = require_ray()
    for name in ("ray", "ray.data"):  # the audit prints its own summary: Ray's progress lines are noise here
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # Ray's C++ core logs, e.g. an "E" line about actor arguments in the object store (the model,
        # shipped once): noise for an audit; a user's own setting wins
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(**({"address": address} if address else {"num_cpus": workers}), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    todo = list(range(first, len(units)))
    if not todo:
        return
    device = next(work.model.parameters()).device
    if gpu:
        work.model.cpu()  # shipped from the CPU: an actor could not rebuild tensors of the driver's cuda:N
    try:
        shipped = ray.put((units, preprocess, work))  # serialised once, for every actor
    finally:
        work.model.to(device)
    ds = ray.data.from_items([{"unit": i} for i in todo], override_num_blocks=min(len(todo), 200))
    ds = ds.map_batches(_Actor, fn_constructor_args=(shipped, full, 1, gpu), batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=max(1, workers)), batch_format="numpy",
                        **({"num_gpus": 1} if gpu else {"num_cpus": 1}))
    pending: dict[int, bytes] = {}
    nxt = first
    for row in ds.iter_rows():
        pending[int(row["unit"])] = row["result"]
        while nxt in pending:  # preserve_order keeps them in order; this makes sure of it
            error, rows, files = pickle.loads(pending.pop(nxt))
            if error is not None:
                raise error
            for rel, data in files.items():
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dest) as tmp:
                    Path(tmp).write_bytes(data)
            yield rows
            nxt += 1
