"""The OpenMP wait policy of the audit's process, chosen before torch (and its OpenMP runtime) loads.

An audit runs the model on torch's OpenMP threads while its own threads decode the next images
and score the last batch's maps. OpenMP's default lets a thread that reaches the end of a
parallel region spin for a while before it sleeps; on a machine with as many busy threads as
cores that spinning holds a core the decoding and scoring threads are waiting for. ``PASSIVE``
makes the waiting threads sleep at once, so the cores go to work that is ready
(``benchmarks/README.md``: the full audit against the Grad-CAM floor on 2 cores).

A value the user set wins. It must be set before ``import torch``: :mod:`auditor.cli` calls
:func:`passive_waits` first (so ``auditor run`` / ``compare`` get it), and so does
``python -m benchmarks``; a Python program that imports torch itself keeps its own setting
(``OMP_WAIT_POLICY=PASSIVE python my_audit.py`` sets it there).
"""

from __future__ import annotations

import os


def passive_waits() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment already says otherwise."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
