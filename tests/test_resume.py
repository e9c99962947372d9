"""Crash safety, `--resume` and determinism: a run killed with SIGKILL and resumed gives the
results of an uninterrupted run; two identical runs give identical files (apart from timing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from auditor.cli import main
from auditor.errors import UsageError
from auditor.runner import run_audit
from auditor.savers import load_maps

from test_run import _vit, write_square_set

TESTS = Path(__file__).parent
EXTRA = [json.dumps({"image": "gone.png", "label": "red"}), "{not json"]  # a record error row + a parse error row


def _results(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    data.pop("timing")
    data["settings"].pop("engine")  # what ran the units left (a resume of a few: in process)
    return data


def _maps(path: Path) -> dict:
    return load_maps(path)


def _assert_same_outputs(a: Path, b: Path, maps=("token_maps.npz",)) -> None:
    assert _results(a) == _results(b)
    for name in ("results.csv", "junit.xml", *maps):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _survivors(marker: str, wait: float = 5.0) -> list[int]:
    """Pids of live processes whose command line holds ``marker`` (a killed run's workers), after
    giving them ``wait`` seconds to go."""
    deadline = time.time() + wait
    while True:
        pids = []
        for p in Path("/proc").glob("[0-9]*"):
            try:
                if marker in p.joinpath("cmdline").read_bytes().decode(errors="replace") and \
                        p.joinpath("stat").read_text().split(") ")[-1][0] != "Z":
                    pids.append(int(p.name))
            except OSError:
                continue
        if not pids or time.time() > deadline:
            return pids
        time.sleep(0.1)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    data = write_square_set(tmp_path / "data", n=14, extra_lines=EXTRA)
    (tmp_path / "slowtoy.py").write_text(
        "import os, sys, time\nsys.path.insert(0, %r)\nfrom test_run import _vit\n"
        "def build():\n    m = _vit()\n    delay = float(os.environ.get('SLOWTOY_SLEEP', '0'))\n"
        "    if delay:\n        m.register_forward_pre_hook(lambda mod, inp: time.sleep(delay))\n    return m\n"
        % str(TESTS))
    args = ["run", "--data", str(data), "--model", "slowtoy:build", "--methods", "gradcam", "--batch-size", "2",
            "--save-maps", "--no-report", "--max-errors", "2"]  # its 2 bad records are known
    env = {**os.environ, "SLOWTOY_SLEEP": "0.4", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "auditor.cli", *args, "--out", "killed"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rows = tmp_path / "killed" / "rows.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # 1 parse-error row, then wait for 3 batches (6 rows)
            if rows.exists() and rows.read_text().count("\n") >= 1 + 6:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the run wrote no rows in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _survivors(str(tmp_path / "data")) == []  # its worker processes died with it (default engine: processes)
    assert not (tmp_path / "killed" / "results.json").exists()
    n_done = rows.read_text().count("\n") - 1
    assert 6 <= n_done < 16
    assert (tmp_path / "killed" / "run.json").exists() and (tmp_path / "killed" / ".parts").is_dir()
    with open(rows, "a") as f:  # a line torn by the kill
        f.write('{"id": "img0')

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, args + ["--out", "killed"])
    assert r.exit_code == 2 and "--resume" in r.output and "Traceback" not in r.output
    seen = []
    import auditor.units as units_mod

    real = units_mod.start_batch
    monkeypatch.setattr(units_mod, "start_batch", lambda items, *a, **k: seen.extend(i.record.id for i in items)
                        or real(items, *a, **k))
    r = CliRunner().invoke(main, args + ["--out", "killed", "--resume", "--engine", "local"])  # seen: in process
    assert r.exit_code == 0, r.output
    assert len(seen) <= 15 - (n_done // 2 * 2) and "img000.png" not in seen  # finished images were not redone
    monkeypatch.setattr(units_mod, "start_batch", real)
    r = CliRunner().invoke(main, args + ["--out", "whole"])
    assert r.exit_code == 0, r.output
    _assert_same_outputs(tmp_path / "killed", tmp_path / "whole", maps=("token_maps.npz", "maps.npz"))
    assert len(_maps(tmp_path / "killed" / "maps.npz")) == 14
    assert not (tmp_path / "killed" / ".parts").exists()


class _Crash(Exception):
    pass


def _crash_after(n):
    def progress(done, total):
        if done >= n:
            raise _Crash
    return progress


@pytest.fixture
def interrupted(tmp_path):
    """A run stopped by an exception after 6 of 13 records (batch size 4: 8 records done)."""
    data = write_square_set(tmp_path / "data", n=12, extra_lines=EXTRA)
    with pytest.raises(_Crash):
        run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam"], batch_size=4, progress=_crash_after(6))
    return data, tmp_path / "o"


def test_resume_after_an_exception_and_determinism(interrupted, tmp_path):
    data, out = interrupted
    res = run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    assert res.data["counts"] == {"images": 14, "ok": 12, "errors": 2}
    for name in ("a", "b"):
        run_audit(data, out=tmp_path / name, model=_vit(), methods=["gradcam"], batch_size=4)
    _assert_same_outputs(tmp_path / "a", tmp_path / "b")  # determinism: two runs, same bytes
    _assert_same_outputs(out, tmp_path / "a")  # resumed = uninterrupted


def test_resume_drops_a_batch_whose_maps_are_missing(interrupted, tmp_path):
    data, out = interrupted
    (out / ".parts" / "token_maps.000000004.npz").unlink()
    res = run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    run_audit(data, out=tmp_path / "a", model=_vit(), methods=["gradcam"], batch_size=4)
    _assert_same_outputs(out, tmp_path / "a")
    assert res.data["counts"]["ok"] == 12


@pytest.mark.parametrize("change, fragment", [
    ({"methods": ["gradcam", "rollout"]}, "the methods"),
    ({"batch_size": 2}, "--batch-size"),
    ({"image_size": 48}, "preprocessing"),
    ({"target": "predicted"}, "the target"),
    ({"save_maps": True}, "--save-maps"),
    ({"seed": 1}, "the seed"),
    ({"mask_classes": "any"}, "--mask-classes"),
    ({"model": "other weights"}, "the model's weights"),
])
def test_resume_refuses_other_settings(interrupted, change, fragment):
    data, out = interrupted
    kwargs = {"model": _vit(), "methods": ["gradcam"], "batch_size": 4}
    if change.get("model") == "other weights":
        m = _vit()
        with torch.no_grad():
            m.head.bias += 0.5
        change = {"model": m}
    with pytest.raises(UsageError, match="Cannot resume") as e:
        run_audit(data, out=out, **{**kwargs, **change}, resume=True)
    assert fragment in str(e.value)


def test_resume_refuses_changed_data_a_finished_run_and_corrupt_rows(interrupted, tmp_path):
    data, out = interrupted
    original = data.read_text()
    data.write_text(original + json.dumps({"image": "img000.png", "id": "new"}) + "\n")
    with pytest.raises(UsageError, match="data set's records"):
        run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    data.write_text(original)
    rows = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text("\n".join(rows[:3] + ["garbage"] + rows[3:]) + "\n")
    with pytest.raises(UsageError, match=r"rows.jsonl:4 is not a result row"):
        run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    (out / "rows.jsonl").write_text("\n".join(rows) + "\n")
    run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    with pytest.raises(UsageError, match="finished audit"):
        run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    with pytest.raises(UsageError, match="exclude each other"):
        run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4, resume=True, overwrite=True)
    with pytest.raises(UsageError, match="--resume"):
        run_audit(data, out=out, model=_vit(), methods=["gradcam"], batch_size=4)
    res = run_audit(data, out=tmp_path / "fresh", model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    assert res.data["counts"]["ok"] == 12  # nothing to resume: a new run


def test_a_crash_while_scoring_in_the_background_keeps_the_finished_batches(tmp_path, monkeypatch):
    # batch i is scored in a second thread while batch i + 1's pass runs: a failure there must
    # still leave only whole batches (rows after their maps), and --resume must finish the run
    import auditor.batches as batches_mod

    data = write_square_set(tmp_path / "data", n=12, extra_lines=EXTRA)
    real, calls = batches_mod.fill_rows, []

    def fails_on_the_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise _Crash
        return real(*a, **k)

    monkeypatch.setattr(batches_mod, "fill_rows", fails_on_the_second_batch)
    with pytest.raises(_Crash):
        run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam"], batch_size=4)
    rows = [json.loads(line) for line in (tmp_path / "o" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 1 + 4  # the parse-error row, then the first batch only
    assert sorted(p.name for p in (tmp_path / "o" / ".parts").iterdir()) == ["token_maps.000000000.npz"]  # no debris
    monkeypatch.setattr(batches_mod, "fill_rows", real)
    run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam"], batch_size=4, resume=True)
    run_audit(data, out=tmp_path / "a", model=_vit(), methods=["gradcam"], batch_size=4)
    _assert_same_outputs(tmp_path / "o", tmp_path / "a")


def test_an_unexpected_decoding_failure_leaves_no_temporary_parts(tmp_path, monkeypatch):
    import auditor.batches as batches_mod

    data = write_square_set(tmp_path / "data", n=12)
    real = batches_mod.load_item

    def breaks_on_img009(record, *args):
        if record.id == "img009.png":
            raise RuntimeError("decoder crashed")
        return real(record, *args)

    monkeypatch.setattr(batches_mod, "load_item", breaks_on_img009)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam"], batch_size=4)
    parts = sorted(p.name for p in (tmp_path / "o" / ".parts").iterdir())
    assert parts and all(not p.endswith(".tmp") for p in parts), parts  # finished parts only, no debris


def test_weights_hash_is_the_hash_of_the_copied_bytes():
    # weights_sha256 hands each tensor's memory to hashlib without a copy: the digest must stay
    # that of the names, dtypes, shapes and bytes, whatever the dtype or memory layout
    import hashlib

    from auditor.resume import weights_sha256

    model = torch.nn.Linear(3, 2)
    model.register_buffer("f16", torch.arange(6, dtype=torch.float16).reshape(2, 3))
    model.register_buffer("bf16", torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
    model.register_buffer("steps", torch.tensor(7))  # 0-d int64
    model.register_buffer("flags", torch.tensor([True, False, True]))
    model.register_buffer("empty", torch.zeros(0, 4))
    model.register_buffer("transposed", torch.arange(12.0).reshape(3, 4).t())  # not contiguous
    expected = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous()
        expected.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        expected.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert weights_sha256(model) == expected.hexdigest()
    with torch.no_grad():
        model.transposed[0, 1] += 1  # one changed value changes the hash
    assert weights_sha256(model) != expected.hexdigest()
