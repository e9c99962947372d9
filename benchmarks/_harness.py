"""Timing helpers: interleaved rounds, medians, ratios, the markdown table."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Config:
    """What one run measures: ``quick`` is a smoke run (a 2-block ViT, 1 repeat, few images)."""

    quick: bool = False
    full: bool = False
    repeats: int = 5
    warmup: int = 1
    batch_sizes: tuple[int, ...] = (1, 16)
    depth: int = 12
    # 32 batches: the steady state of a long audit; at 128 images a run's fixed costs (validation, hashes,
    # starting workers, the end of the run: ~1 s, a row of their own) were 6-9% of the time measured
    audit_images: int = 512
    audit_repeats: int = 3
    rss_sizes: tuple[int, ...] = (100, 1000)
    scale_sizes: tuple[int, ...] = (1000, 10000)
    device: str = "cpu"

    @classmethod
    def make(cls, *, quick: bool = False, full: bool = False, device: str = "cpu") -> "Config":
        if quick:
            return cls(quick=True, repeats=1, warmup=1, batch_sizes=(1, 4), depth=2, audit_images=8, audit_repeats=1,
                       rss_sizes=(20, 60), scale_sizes=(100, 300), device=device)
        return cls(full=full, rss_sizes=(100, 1000, 10000) if full else (100, 1000),
                   scale_sizes=(1000, 10000, 50000) if full else (1000, 10000), device=device)


@dataclass
class Row:
    """One line of the table: a measurement, its ratio to a reference, and the target."""

    family: str
    name: str
    value: str
    ratio: float | None = None
    reference: str = ""
    target: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        verdict = "" if self.met is None else ("met" if self.met else "MISSED")
        return [self.family, self.name, self.value, ratio, self.reference, self.target, verdict]


def interleaved(fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` rounds after ``warmup`` rounds.

    Every round runs each function once, in turn (the order rotated round by round), so a
    change in the machine's load during the run hits all variants alike; compare them per
    round (:func:`ratio`).
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no variant always goes first
            fn = fns[name]
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # GPU work is asynchronous: time it to its end
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``num / den`` (same-round pairs)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def table(rows: list[Row]) -> str:
    head = ["family", "measurement", "value", "ratio", "ratio to", "target", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)
