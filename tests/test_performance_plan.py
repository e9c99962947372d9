"""The cost plan, proven by counting passes (not by timing): an audit runs one forward per
batch and at most one backward, whatever the number of methods; ``python -m benchmarks --quick``
writes its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auditor.datasets.synthetic import write_dataset
from auditor.methods import list_methods
from auditor.results import RowsFile
from auditor.runner import run_audit

from auditor.datasets.synthetic import CLASSES
from conftest import tiny_vit

ROOT = Path(__file__).resolve().parent.parent


def _count(model):
    counts = {"forward": 0, "backward": 0}
    model.register_forward_hook(lambda *a: counts.__setitem__("forward", counts["forward"] + 1))
    model.head.register_full_backward_pre_hook(lambda *a: counts.__setitem__("backward", counts["backward"] + 1))
    return counts


@pytest.mark.parametrize("methods, backwards", [(None, 3), (["cls_attention", "rollout"], 0)])
def test_an_audit_runs_one_forward_and_at_most_one_backward_per_batch(tmp_path, methods, backwards):
    manifest = write_dataset(tmp_path / "data", 20, gaze_maps=False)  # 20 images, batch 8: 3 batches
    model = tiny_vit(num_classes=4, class_names=CLASSES)
    counts = _count(model)
    res = run_audit(manifest, out=tmp_path / "out", model=model, methods=methods, batch_size=8, image_size=32)
    assert counts == {"forward": 3, "backward": backwards}
    assert res.data["counts"]["ok"] == 20
    if methods is None:  # every registered method that applies to a ViT shared those passes
        assert {"gradcam", "input_gradient", "cls_attention", "rollout"} <= set(res.summary)
        assert len(list_methods()) > 4


ONE_PASS_CAMS = ["gradcam", "hirescam", "gradcam_plusplus", "xgradcam", "layercam", "eigencam", "eigengradcam"]


def test_the_whole_cam_family_shares_one_forward_and_one_backward_per_batch(tmp_path):
    manifest = write_dataset(tmp_path / "data", 20, gaze_maps=False)
    model = tiny_vit(num_classes=4, class_names=CLASSES)
    counts = _count(model)
    res = run_audit(manifest, out=tmp_path / "out", model=model, methods=ONE_PASS_CAMS + ["input_gradient"],
                    batch_size=8, image_size=32)
    assert counts == {"forward": 3, "backward": 3}
    assert set(ONE_PASS_CAMS) <= set(res.summary)
    assert res.data["settings"]["methods"]["eigencam"]["cost"] == "1 forward per batch, shared with every other method"


def test_methods_with_their_own_passes_run_them_batched_after_the_shared_pass():
    """Score-CAM's C = 48 masked images per image, 5 images, internal batch 32: ceil(240 / 32) = 8
    extra forwards, no backward. Integrated gradients, 6 steps, internal batch 16: ceil(30 / 16) = 2
    forwards + backwards, and 2 forwards for the image's and the baseline's scores. The gradient
    methods still share one forward + one backward."""
    from auditor.methods import compute_maps, create_method

    model = tiny_vit(num_classes=4)
    counts = _count(model)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = compute_maps(model, x, [create_method("gradcam"), create_method("layercam"),
                                  create_method("scorecam", batch_size=32),
                                  create_method("integrated_gradients", n_steps=6, batch_size=16)],
                       target=[0, 1, 2, 3, 0])
    assert counts == {"forward": 1 + 8 + 2 + 2, "backward": 1 + 2}
    assert res.maps["scorecam"].maps.shape == (5, 4, 4)
    assert res.maps["integrated_gradients"].maps.shape == (5, 32, 32)


def test_the_default_method_list_leaves_out_methods_asked_for_by_name():
    from auditor.methods import default_methods, method_class

    assert {"gradcam", "input_gradient", "cls_attention", "rollout"} <= set(default_methods())
    assert not {"scorecam", "ablationcam", "hirescam"} & set(default_methods())
    assert all(not method_class(n).needs_own_passes for n in default_methods())


def test_rows_are_streamed_from_rows_jsonl_and_match_results_json(tmp_path):
    manifest = write_dataset(tmp_path / "data", 5, gaze_maps=False)
    res = run_audit(manifest, out=tmp_path / "out", model=tiny_vit(num_classes=4, class_names=CLASSES), methods=["gradcam"],
                    image_size=32)
    assert isinstance(res.rows, RowsFile) and len(res.rows) == 5
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rows"] == list(res.rows) and saved["counts"] == {"images": 5, "ok": 5, "errors": 0}
    assert res.rows[-1] == saved["rows"][-1] and res.rows[1:3] == saved["rows"][1:3]


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_row_products_equal_the_matrix_product(fusion):
    """Rollout computes only the CLS row, from the last layer: it must equal the CLS row of
    the full product ``Â_L ... Â_1`` of the paper (float64 reference)."""
    from auditor.methods import create_method
    from auditor.methods.base import Recording

    g = torch.Generator().manual_seed(0)
    attns = [(f"blocks.{i}", torch.softmax(3 * torch.randn(2, 3, 17, 17, generator=g), -1)) for i in range(4)]
    rec = Recording(model=tiny_vit(), inputs=torch.zeros(2, 3, 32, 32), attentions=attns)
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}[fusion]
    product = None
    for _, a in attns:
        f = 0.5 * fuse(a.double()) + 0.5 * torch.eye(17, dtype=torch.float64)
        f = f / f.sum(-1, keepdim=True)
        product = f if product is None else f @ product
    expected = product[:, 0, 1:].float().reshape(2, 4, 4)
    torch.testing.assert_close(create_method("rollout", head_fusion=fusion).compute(rec).maps, expected)


@pytest.mark.slow
def test_benchmarks_quick_writes_the_table(tmp_path):
    out = tmp_path / "results.md"
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=600)
    text = out.read_text()
    for row in ("floor: bare forward, batch 1", "floor: forward + backward to Grad-CAM layer, batch 4",
                "ours: Grad-CAM (compute_maps), batch 4", "ours: cls_attention + rollout (one forward), batch 4",
                "matplotlib imshow + savefig", "ours: LUT + blend + JPEG q85", "run_audit gradcam+cls_attention+rollout",
                "peak RSS, 20 images", "peak RSS, 60 images", "all 7 one-pass CAMs together",
                "integrated_gradients(n_steps=2) marginal", "scorecam() marginal"):
        assert row in text, row
    assert text.count("\n| ") >= 17
