"""--engine processes: forked CPU workers give the in-process run's results, errors and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auditor import process_engine
from auditor.errors import UsageError
from auditor.process_engine import MIN_UNITS, choose
from auditor.runner import run_audit
from auditor.units import UnitWork

from conftest import same_results, tiny_vit
from test_episodes import OPTS, write_colour_set
from test_run import write_square_set

pytestmark = pytest.mark.skipif(not process_engine.available(), reason="worker processes are forked: Linux only")

KW = dict(batch_size=2, image_size=32, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture
def one_thread():
    """Each worker gets torch threads // workers = 1: the local run on one thread has the same reduction order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def squares(tmp_path):
    return write_square_set(tmp_path / "data", n=10, extra_lines=['{"image": "missing.png", "label": "red"}'])


def test_workers_give_the_local_runs_results_bit_for_bit(one_thread, squares, tmp_path):
    kw = dict(model=tiny_vit(num_classes=3, seed=2, class_names=["red", "green", "blue"]), save_maps=True, **KW)
    local = run_audit(squares, out=tmp_path / "local", engine="local", **kw)
    forked = run_audit(squares, out=tmp_path / "proc", engine="processes", workers=2, **kw)
    assert local.data["counts"] == {"images": 11, "ok": 10, "errors": 1}
    assert forked.data["settings"]["engine"] == {"name": "processes", "workers": 2}
    assert local.data["settings"]["engine"] == {"name": "local", "workers": 1}
    same_results(local, forked)
    assert (local.out / "maps.npz").read_bytes() == (forked.out / "maps.npz").read_bytes()


def test_workers_run_few_shot_episodes(one_thread, tmp_path):
    data = write_colour_set(tmp_path / "data")
    kw = dict(model=tiny_vit(num_classes=0, seed=3), episodes=OPTS, image_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    same_results(run_audit(data, out=tmp_path / "local", engine="local", **kw),
                 run_audit(data, out=tmp_path / "proc", engine="processes", **kw))


class _ThreeD(torch.nn.Module):
    """A model whose output is not ``[batch, classes]`` for batches of two or more (the up-front
    check probes one image): a UsageError raised inside the unit."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_vit(num_classes=3)

    def forward(self, x):
        out = self.inner(x)
        return out if len(x) == 1 else out[:, :, None]


def test_a_bad_input_inside_a_worker_is_the_same_error_as_locally(squares, tmp_path):
    kw = dict(model=_ThreeD(), methods=["gradcam"], target="predicted", **KW)
    with pytest.raises(UsageError, match=r"returned shape \(2, 3, 1\)"):
        run_audit(squares, out=tmp_path / "local", engine="local", **kw)
    with pytest.raises(UsageError, match=r"returned shape \(2, 3, 1\)"):
        run_audit(squares, out=tmp_path / "proc", engine="processes", **kw)
    assert not (tmp_path / "proc" / "rows.jsonl").exists()  # nothing finished: nothing left to block a retry


class _Broken(torch.nn.Module):
    """A user's model whose forward raises, on batches of two or more, an exception of a local
    class (it cannot be pickled back)."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_vit(num_classes=3)

    def forward(self, x):
        class CustomError(Exception):
            pass

        if len(x) == 1:
            return self.inner(x)
        raise CustomError("the user's model broke")


def test_an_exception_that_cannot_be_pickled_arrives_as_its_traceback(squares, tmp_path):
    with pytest.raises(RuntimeError, match="CustomError: the user's model broke"):
        run_audit(squares, out=tmp_path / "o", model=_Broken(), engine="processes", workers=2, methods=["gradcam"],
                  target="predicted", **KW)


def test_a_worker_that_dies_is_a_clear_error(squares, tmp_path, monkeypatch):
    parent = os.getpid()
    real = UnitWork.run

    def dies(self, i, *args, **kwargs):
        if os.getpid() != parent and i == 2:
            os._exit(9)  # as the kernel's OOM killer would
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(UnitWork, "run", dies)
    with pytest.raises(RuntimeError, match="worker process died.*fewer --workers"):
        run_audit(squares, out=tmp_path / "o", model=tiny_vit(num_classes=3, class_names=["red", "green", "blue"]),
                  engine="processes", workers=2, **KW)


def test_a_failed_unit_keeps_the_finished_ones_for_resume(one_thread, squares, tmp_path, monkeypatch):
    kw = dict(model=tiny_vit(num_classes=3, seed=2, class_names=["red", "green", "blue"]), **KW)
    whole = run_audit(squares, out=tmp_path / "whole", engine="local", **kw)
    real = UnitWork.run

    def fails(self, i, *args, **kwargs):
        if i == 3:
            raise ValueError("unit 3 failed")
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(UnitWork, "run", fails)
    with pytest.raises(ValueError, match="unit 3 failed"):
        run_audit(squares, out=tmp_path / "o", engine="processes", workers=2, **kw)
    rows = (tmp_path / "o" / "rows.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in rows] == [r["id"] for r in list(whole.rows)[:6]]  # units 0-2, in order
    monkeypatch.setattr(UnitWork, "run", real)
    resumed = run_audit(squares, out=tmp_path / "o", engine="processes", workers=2, resume=True, **kw)
    same_results(whole, resumed)


@pytest.mark.parametrize("engine, workers, device, units, threads, expected", [
    ("auto", None, "cpu", MIN_UNITS, 2, ("processes", 2)),
    ("auto", None, "cpu", MIN_UNITS, 16, ("processes", 4)),  # at most 4 by default: each holds a unit's activations
    ("auto", None, "cpu", MIN_UNITS - 1, 2, ("local", 1)),  # too few units to pay for starting workers
    ("auto", None, "cpu", 100, 1, ("local", 1)),  # one thread: nothing to share out
    ("auto", None, "cuda", 100, 2, ("local", 1)),
    ("auto", 3, "cpu", 100, 2, ("processes", 3)),
    ("processes", None, "cpu", 1, 2, ("processes", 1)),  # never more workers than units
    ("processes", 8, "cpu", 3, 2, ("processes", 3)),
    ("local", None, "cpu", 100, 2, ("local", 1)),
    ("ray", None, "cuda", 100, 2, ("ray", 2)),
])
def test_the_engine_choice(engine, workers, device, units, threads, expected, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert choose(engine, workers, torch.device(device), units) == expected


def test_processes_on_a_gpu_is_refused_with_the_fix():
    with pytest.raises(UsageError, match="--device cpu.*--engine local"):
        choose("processes", None, torch.device("cuda"), 10)


def test_output_printed_before_the_workers_start_appears_once(squares, tmp_path):
    """A forked worker holds a copy of the parent's stdout buffer and flushes it on exit: it must be
    empty at the fork (multiprocessing flushes the standard streams before it forks)."""
    code = ("import sys; sys.path[:0] = ['tests']; from conftest import tiny_vit; from auditor.runner import run_audit; "
            "print('before the audit'); "
            f"run_audit({str(squares)!r}, out={str(tmp_path / 'o')!r}, engine='processes', workers=2, batch_size=2, "
            "image_size=32, mean=(0, 0, 0), std=(1, 1, 1), "
            "model=tiny_vit(num_classes=3, class_names=['red', 'green', 'blue']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    assert out.count("before the audit") == 1, out


def test_the_cli_runs_workers_and_says_which_engine_ran(squares, tmp_path):
    from click.testing import CliRunner

    from auditor.cli import main

    args = ["run", "--data", str(squares), "--model", "test_run:_vit", "--methods", "gradcam", "--batch-size", "2",
            "--no-report", "--max-errors", "1", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, args + ["--engine", "processes", "--workers", "2"])
    assert r.exit_code == 0, r.output
    settings = json.loads((tmp_path / "o" / "results.json").read_text())["settings"]
    assert settings["engine"] == {"name": "processes", "workers": 2}
    r = CliRunner().invoke(main, args + ["--engine", "local", "--workers", "2", "--overwrite"])
    assert r.exit_code == 2 and "--engine local has none" in r.output


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python 3.12+ warns when a process with threads forks")
def test_forking_beside_torch_threads_does_not_warn(squares, tmp_path):
    """torch's OpenMP threads make Python 3.12+ warn at every fork; the workers run only their unit."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        run_audit(squares, out=tmp_path / "o", model=tiny_vit(num_classes=3, class_names=["red", "green", "blue"]),
                  engine="processes", workers=2, **KW)


def test_a_worker_with_several_threads_runs(squares, tmp_path):
    """GNU OpenMP is not fork-safe: a worker's main thread inherits the parent's thread team and its
    first parallel region waited for ever (one worker on 2 threads; 4 workers on an 8-core machine).
    The parent runs a parallel region first, as every real run has by then (loading the model)."""
    code = ("import sys, torch; sys.path[:0] = ['tests']; from conftest import tiny_vit; from auditor.runner import run_audit; "
            "torch.set_num_threads(2); torch.rand(1 << 22).exp(); "
            f"r = run_audit({str(squares)!r}, out={str(tmp_path / 'o')!r}, engine='processes', workers=1, batch_size=2, "
            "image_size=64, mean=(0, 0, 0), std=(1, 1, 1), model=tiny_vit(num_classes=3, class_names=['red', 'green', 'blue'])); "
            "print(r.data['counts']['ok'], r.data['settings']['engine'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "10 {'name': 'processes', 'workers': 1}", out.stdout
