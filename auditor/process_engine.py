"""``auditor run --engine processes``: the per-unit work in forked worker processes.

On a CPU the model's two-thread OpenMP team and the scoring thread of the in-process engine
fight for the same cores: each parallel op waits for the thread that lost its core, so on 2
cores scoring and decoding cost their full time on top of the model's. Here each of
``workers`` processes takes whole units (a batch, or a few-shot episode) -- decode, model
pass, scoring -- on ``torch threads // workers`` threads of its own, nothing shared but the
model's weights (forked, copy-on-write, never copied). That is data parallelism over the
cores, as a ``DataLoader`` does for decoding, applied to the whole unit.

A worker writes its unit's map part (and faithfulness part) under ``out`` itself: a part is
renamed into place complete, and a part ahead of ``rows.jsonl`` is discarded on ``--resume``
(:func:`auditor.resume.resume_point`), so order and resume are the in-process engine's. The
rows come back to the caller in unit order. Values equal the in-process engine's up to
floating-point reduction order (fewer torch threads); a bad input (an
:class:`~auditor.errors.AuditorError`) reaches the CLI as itself.

Only where ``fork`` exists (Linux; macOS is excluded as Apple's frameworks are not fork-safe)
and only for a model on the CPU: CUDA cannot be forked, and one GPU is not shared out.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .errors import AuditorError, UsageError

MAX_DEFAULT_WORKERS = 4  # each worker holds one unit's activations: the default bounds memory on big machines
MIN_UNITS = 8  # below this, starting workers (each new one's first unit pays its page faults) buys little

_JOB: tuple | None = None  # the forked worker's (units, preprocess, work, full, out)
_THREAD: ThreadPoolExecutor | None = None  # the forked worker's one thread that runs units (see _start)


def available() -> bool:
    """Whether this platform can fork worker processes safely."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def choose(engine: str, workers: int | None, device: torch.device, n_units: int) -> tuple[str, int]:
    """``(engine, workers)`` to run ``n_units`` units with on ``device``.

    ``auto``: ``processes`` on a CPU (Linux) with two or more torch threads and at least
    ``MIN_UNITS`` units, one worker per torch thread up to ``MAX_DEFAULT_WORKERS``; otherwise
    ``local``. ``processes`` asked for where it cannot run is a :class:`UsageError`."""
    if engine == "ray":
        return engine, workers or 2
    if engine == "local":
        return engine, 1
    fits = device.type == "cpu" and available()
    if engine == "processes" and not fits:
        raise UsageError("--engine processes forks CPU workers: it needs Linux and --device cpu; "
                         "use --engine local (or auto)")
    n = max(1, min(workers or min(torch.get_num_threads(), MAX_DEFAULT_WORKERS), n_units))
    if engine == "auto" and (not fits or n < 2 or n_units < MIN_UNITS):
        return "local", 1
    return "processes", n


def _start(job: tuple, threads: int, parent: int) -> None:
    """Worker initializer: the job arrives by fork (never pickled); Ctrl-C is the parent's to
    handle; a parent killed outright (``kill -9``: no cleanup runs) takes its workers with it,
    instead of leaving them idle with their memory (``PR_SET_PDEATHSIG``).

    Units run on a thread started here, not on the worker's main thread: GNU OpenMP (torch's
    libgomp) is not fork-safe, and the main thread of a child forked after the parent ran a
    parallel region still holds the parent's thread team -- its first parallel region waits
    for threads that were not forked, for ever (a worker with 2+ threads: ``--workers 1`` on 2
    cores, or 4 workers on 8+). A thread started in the child builds a team of its own."""
    global _JOB, _THREAD
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux's libc: the pool's own shutdown still ends them
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    _THREAD = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(threads,))
    _JOB = job


def _unit(i: int) -> list[dict[str, Any]]:
    """Unit ``i``, decoded, passed and scored in this worker; its parts are in place on return."""
    units, preprocess, work, full, out = _JOB
    try:
        return _THREAD.submit(work.run, i, units[i], preprocess, out, full=full).result()
    except AuditorError:
        raise
    except BaseException as e:  # a bug in a user's model may raise what cannot be pickled back
        try:
            pickle.dumps(e)
        except Exception:
            raise RuntimeError("".join(traceback.format_exception(e)).rstrip()) from None
        raise


def run_units(units: Sequence[Sequence[Any]], first: int, preprocess, work: Any, out: Path, *,
              full: bool, workers: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of units ``first, first + 1, ...`` in order, each once its parts are in place.

    At most ``2 * workers`` units are in flight. On any failure, Ctrl-C or the consumer
    stopping, units not started are cancelled and those running are waited for (at most one
    unit per worker), so nothing writes under ``out`` after this returns."""
    threads = max(1, torch.get_num_threads() // workers)
    job = (units, preprocess, work, full, Path(out))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start, initargs=(job, threads, os.getpid()))
    pending: list[Future] = []
    try:
        for i in range(first, len(units)):
            pending.append(_submit(pool, i))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    except BrokenProcessPool:  # seen by result(), or by submit() once the pool broke
        raise RuntimeError("an audit worker process died (killed for memory?): run again with fewer --workers, "
                           "a smaller --batch-size, or --engine local") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, i: int) -> Future:
    """Unit ``i`` to the pool (the first submit forks the workers). Python 3.12+ warns that forking a
    process with threads (torch's own) may deadlock a child that takes a lock one of them held; the
    workers run nothing but the unit's torch / numpy work, which fork-safe runtimes reinitialise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)
        return pool.submit(_unit, i)
