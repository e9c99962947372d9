"""Threads that share the cores with the model (issues 18 and 19).

Decoding and scoring threads run torch on one thread each (their own OpenMP team of
``torch.get_num_threads()`` would fight the model's); the model's thread keeps its threads, and
the default is restored after the run. Eigen-CAM's SVDs run numpy's BLAS on one thread.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from auditor import batches
from auditor.datasets.synthetic import SyntheticConfig, write_dataset
from auditor.methods.cam_base import first_component
from auditor.runner import run_audit
from conftest import tiny_vit


def test_decoding_and_scoring_threads_run_torch_on_one_thread(tmp_path, monkeypatch):
    seen: dict[str, list[tuple[str, int]]] = {"decode": [], "score": []}
    load_item, fill_rows = batches.load_item, batches.fill_rows

    def record(kind, fn):
        def wrapped(*a, **k):
            seen[kind].append((threading.current_thread().name, torch.get_num_threads()))
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(batches, "load_item", record("decode", load_item))
    monkeypatch.setattr(batches, "fill_rows", record("score", fill_rows))
    manifest = write_dataset(tmp_path / "data", 6, cfg=SyntheticConfig(size=32))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_audit(manifest, out=tmp_path / "out", model=tiny_vit(num_classes=4), methods=["gradcam"], batch_size=2,
                  target="predicted")
        assert torch.get_num_threads() == 2  # the model's thread, during and after the run
        assert len(seen["decode"]) == 6 and len(seen["score"]) == 3
        main = threading.main_thread().name
        for kind in seen:
            assert all(name != main and n == 1 for name, n in seen[kind]), (kind, seen[kind])
        started_later: list[int] = []  # new threads start from the default again
        t = threading.Thread(target=lambda: started_later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert started_later == [2]
    finally:
        torch.set_num_threads(before)


def test_eigencam_svd_runs_on_one_blas_thread(monkeypatch):
    blas = ThreadpoolController().select(user_api="blas")
    threads_in_svd: list[int] = []
    svd = np.linalg.svd

    def recording_svd(*a, **k):
        threads_in_svd.append(min(lib["num_threads"] for lib in blas.info()))
        return svd(*a, **k)

    monkeypatch.setattr(np.linalg, "svd", recording_svd)
    x = torch.randn(3, 8, 4, 5, generator=torch.Generator().manual_seed(0))
    with blas.limit(limits=2):
        first_component(x)
        after = [lib["num_threads"] for lib in blas.info()]
    assert threads_in_svd == [1, 1, 1]
    assert after == [2] * len(after)  # restored after the block
