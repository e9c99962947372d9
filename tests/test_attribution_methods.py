"""Integrated gradients, SmoothGrad and occlusion equal Captum 0.9's attributions.

Reference values: tests/data/attr_reference.npz, written by tests/data/make_attr_reference.py
in a throwaway venv with torch==2.14.1, torchvision==0.29.1, timm==1.0.31, captum==0.9.0
(PyPI wheel; pytorch/captum), numpy==2.4.6, safetensors==0.8.0, Python 3.11.7 (stored in the
npz under ``versions``; the settings of each run under ``configs``). Models: the timm ViT
(64 x 96) and SmallCNN (32 x 32) of tests/test_reference_values.py, the same weights.

Captum ran on the model's own forward (timm: fused attention); SmoothGrad's noise came from
``torch.manual_seed(seed)`` and Captum's single ``torch.normal`` draw; the blur baseline is
torchvision's ``gaussian_blur``. Tolerance: max |ours - Captum| <= 1e-5 x max |Captum| for
attributions, and |ours - Captum| <= 1e-5 for IG's convergence delta (our per-image
``completeness_error``). Observed (torch 2.13 CPU): CNN <= 1.2e-7 relative (most exactly 0),
deltas exactly equal; ViT 2.3e-7 (IG), 2.6e-7 (SmoothGrad), 1.6e-6 (occlusion: fused vs
explicit attention in the two runs), IG delta 7e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import UsageError
from auditor.methods import compute_maps, create_method
from auditor.methods.integrated_gradients import path_nodes

from test_reference_values import levels_to_input, max_diff
from test_reference_values import cnn, vit  # noqa: F401  (pytest fixtures)

REFERENCE = Path(__file__).resolve().parent / "data" / "attr_reference.npz"
TOL_REL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def our_method(cfg: dict, batch_size: int):
    if cfg["method"] == "integrated_gradients":
        keys = {k: cfg[k] for k in ("blur_sigma", "noise_stdev", "seed") if k in cfg}
        return create_method("integrated_gradients", n_steps=cfg["n_steps"], method=cfg["rule"],
                             baseline=cfg["baseline"], batch_size=batch_size, **keys)
    if cfg["method"] == "smoothgrad":
        return create_method("smoothgrad", n_samples=cfg["n_samples"], stdev=cfg["stdev"], squared=cfg["squared"],
                             seed=cfg["seed"], batch_size=batch_size)
    return create_method("occlusion", window=cfg["window"], stride=cfg["stride"], baseline=cfg["baseline"],
                         batch_size=batch_size)


def cases(ref_keys: list[str]) -> list[tuple[str, str]]:
    return sorted({tuple(k.split("/")[:2]) for k in ref_keys if k.count("/") == 2})


with np.load(REFERENCE) as _f:
    CASES = cases(list(_f.files))


@pytest.mark.parametrize("prefix, name", CASES)
def test_attributions_match_captum(vit, cnn, ref, prefix, name):
    cfg = json.loads(str(ref["configs"]))[name]
    model = vit if prefix == "vit" else cnn
    x = levels_to_input(ref[f"{prefix}_x_levels"])
    method = our_method(cfg, batch_size=7)  # chunks that cut across images and path points
    res = compute_maps(model, x, [method], target=ref[f"{prefix}_targets"].tolist())
    expected = ref[f"{prefix}/{name}/attr"]
    scale = np.abs(expected).max()
    tol = TOL_REL * scale
    result = res.maps[cfg["method"]]
    if cfg["method"] == "occlusion":  # Captum's value is the same on every channel: the map
        assert max_diff(expected, expected[:, :1]) == 0.0
        # each value is a difference of two float32 scores: a few ulps of the scores' size (not of the
        # difference's) is float32's own resolution, and CPUs differ there (1.8e-7 on one, 0 on another)
        with torch.no_grad():
            tol = max(tol, 4 * float(np.spacing(np.float32(model(x).abs().max()))))
        assert max_diff(result.maps.numpy(), expected[:, 0]) <= tol
    ours = result.extras["attributions"].numpy()
    assert ours.shape == expected.shape
    assert max_diff(ours, expected) <= tol, max_diff(ours, expected) / scale
    if cfg["method"] == "integrated_gradients":
        delta = result.extras["completeness_error"].numpy()
        assert max_diff(delta, ref[f"{prefix}/{name}/delta"]) <= TOL_REL
        torch.testing.assert_close(result.maps, torch.from_numpy(ours).sum(1))


def test_smoothgrad_noise_does_not_depend_on_the_internal_batch_size(cnn, ref):
    """Chunks of 1, 3 (sizes multiple of 16 values: 3 x 32 x 32) and all at once draw the same noise."""
    x = levels_to_input(ref["cnn_x_levels"])
    maps = [compute_maps(cnn, x, [create_method("smoothgrad", n_samples=4, stdev=0.3, batch_size=bs)],
                         target=[0, 2]).maps["smoothgrad"].maps for bs in (1, 3, 8)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-7)
    torch.testing.assert_close(maps[0], maps[2], rtol=0, atol=1e-7)


def test_integrated_gradients_completeness_error_shrinks_with_steps(cnn, ref):
    x = levels_to_input(ref["cnn_x_levels"])
    errors = [compute_maps(cnn, x, [create_method("integrated_gradients", n_steps=n, method="riemann_right")],
                           target=[0, 2]).maps["integrated_gradients"].extras["completeness_error"].abs().max()
              for n in (2, 64)]
    assert errors[1] < errors[0] / 4


def test_path_nodes_hand_values():
    assert path_nodes("riemann_trapezoid", 3) == ([1 / 6, 1 / 3, 1 / 6], [0.0, 0.5, 1.0])
    weights, alphas = path_nodes("gausslegendre", 2)  # nodes +-1/sqrt(3) on [-1, 1], weights 1
    np.testing.assert_allclose(alphas, [0.5 - 0.5 / 3 ** 0.5, 0.5 + 0.5 / 3 ** 0.5])
    np.testing.assert_allclose(weights, [0.5, 0.5])


def test_occlusion_of_a_hand_built_model():
    """score = sum of the image's pixels in channel 0: occluding a window (baseline 0) drops the
    score by the window's sum; each pixel's attribution is the mean drop over its windows."""

    class SumModel(torch.nn.Module):
        def forward(self, x):
            return x[:, 0].sum((1, 2))[:, None].repeat(1, 2)

    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    res = compute_maps(SumModel(), x, [create_method("occlusion", window=2, stride=2)], target=[0])
    blocks = x[0, 0].view(2, 2, 2, 2).sum((1, 3))  # sums of the four 2 x 2 windows
    torch.testing.assert_close(res.maps["occlusion"].maps[0], blocks.repeat_interleave(2, 0).repeat_interleave(2, 1))


@pytest.mark.parametrize("name, kwargs", [("integrated_gradients", {"baseline": "grey"}),
                                          ("integrated_gradients", {"method": "simpson"}),
                                          ("occlusion", {"window": 4, "stride": 5}),
                                          ("smoothgrad", {"n_samples": 0})])
def test_bad_options_are_usage_errors(name, kwargs):
    with pytest.raises(UsageError, match=name):
        create_method(name, **kwargs)


def test_own_pass_methods_skip_token_targets_with_the_reason():
    """A headless backbone's CLS-output norm is re-scored from the output (allowed); a patch-token
    target needs the final tokens, which the extra passes do not record: skipped, with why."""
    from conftest import tiny_vit

    x = torch.zeros(1, 3, 32, 32)
    res = compute_maps(tiny_vit(num_classes=0), x, [create_method("occlusion", window=8)], target="cls-norm")
    assert res.maps["occlusion"].maps.shape == (1, 32, 32)
    res = compute_maps(tiny_vit(num_classes=0), x, [create_method("occlusion", window=8)], target="patch-norm")
    assert "patch-norm" in res.skipped["occlusion"]


def test_an_audit_reports_the_completeness_error_per_image_and_its_summary(tmp_path):
    from auditor.datasets.synthetic import CLASSES, write_dataset
    from auditor.runner import run_audit
    from conftest import tiny_vit

    manifest = write_dataset(tmp_path / "data", 6, gaze_maps=False)
    res = run_audit(manifest, out=tmp_path / "out", model=tiny_vit(num_classes=4, class_names=CLASSES),
                    methods=["integrated_gradients"], image_size=32, batch_size=4, report=True)
    errors = [row["metrics"]["integrated_gradients"]["completeness_error"] for row in res.rows]
    assert len(errors) == 6 and all(isinstance(e, float) and e >= 0 for e in errors)  # a size: lower is better
    from auditor.report.common import arrow

    assert arrow("completeness_error") == "↓"
    summary = res.summary["integrated_gradients"]["completeness_error"]
    assert summary.n == 6 and summary.mean == pytest.approx(np.mean(errors))
    assert res.data["settings"]["methods"]["integrated_gradients"]["n_steps"] == 50
    assert "completeness_error" in (tmp_path / "out" / "report.html").read_text()
