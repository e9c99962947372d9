"""Benchmarks: ``python -m benchmarks`` measures every cost against its physical floor in one run.

Each family is a module (:mod:`.passes`, :mod:`.overlay`, :mod:`.audit`) whose ``run(cfg)``
returns :class:`~benchmarks._harness.Row` s; :mod:`.__main__` prints them as a markdown table
and writes ``benchmarks/results.md``. Timings are compared as ratios measured in the same run,
variants interleaved round by round, so the load of a shared machine cancels out.
"""
