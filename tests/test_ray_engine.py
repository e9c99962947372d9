"""--engine ray gives the local run's results (skipped when Ray is not installed: extra [ray])."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from auditor.runner import run_audit

from conftest import same_results, tiny_vit
from test_episodes import OPTS, write_colour_set
from test_run import write_square_set

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'attention-auditor[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray actor: the same reduction order, so the same bits
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    # the actors import models defined in the tests' modules (pickled by reference)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def test_ray_engine_equals_the_local_run(local_ray, tmp_path):
    data = write_square_set(tmp_path / "data", n=10, extra_lines=['{"image": "missing.png", "label": "red"}'])
    model = tiny_vit(num_classes=3, seed=2, class_names=["red", "green", "blue"])
    kw = dict(model=model, batch_size=4, image_size=32, mean=(0, 0, 0), std=(1, 1, 1), save_maps=True)
    local = run_audit(data, out=tmp_path / "local", engine="local", **kw)
    remote = run_audit(data, out=tmp_path / "ray", engine="ray", workers=2, **kw)
    assert local.data["counts"] == {"images": 11, "ok": 10, "errors": 1}
    same_results(local, remote)
    full_a, full_b = np.load(local.out / "maps.npz"), np.load(remote.out / "maps.npz")
    assert full_a.files == full_b.files and len(full_a.files) == 10 * len(local.data["settings"]["methods"])


def test_ray_engine_runs_few_shot_episodes(local_ray, tmp_path):
    data = write_colour_set(tmp_path / "data")
    model = tiny_vit(num_classes=0, seed=3)
    kw = dict(model=model, episodes=OPTS, image_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    local = run_audit(data, out=tmp_path / "local", engine="local", **kw)
    same_results(local, run_audit(data, out=tmp_path / "ray", engine="ray", **kw))


def test_a_bad_input_inside_an_actor_is_the_same_error_as_locally(local_ray, tmp_path):
    from auditor.errors import UsageError

    from test_process_engine import KW, _ThreeD  # batches of two: 3-D output, a UsageError inside the unit

    data = write_square_set(tmp_path / "data", n=4)
    kw = dict(model=_ThreeD(), methods=["gradcam"], target="predicted", **KW)
    with pytest.raises(UsageError, match=r"returned shape \(2, 3, 1\)"):
        run_audit(data, out=tmp_path / "local", engine="local", **kw)
    with pytest.raises(UsageError, match=r"returned shape \(2, 3, 1\)"):
        run_audit(data, out=tmp_path / "ray", engine="ray", **kw)
