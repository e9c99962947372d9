"""LeGrad: equal to torchcam 0.5.0's maps on a ViT with the same weights; scope and options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import UsageError
from auditor.methods import compute_maps, create_method, default_methods, describe_method, parse_method_options

from conftest import tiny_vit
from test_attnlrp import lxt_vit, timm_lxt_vit
from test_methods import QuadrantCNN

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ref():
    return np.load(DATA / "legrad_reference.npz")


@pytest.mark.parametrize("layers, key", [(None, "all"), (1, "last1")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_maps_equal_torchcam(ref, layers, key, dtype):
    """torchcam 0.5.0 ``LeGrad(model, blocks)(targets, normalized=False)`` on torchvision's ViT,
    float64 (tests/data/make_legrad_reference.py); ours on the built-in ViT with the same weights:
    equal to 1e-5 of the largest value (float32 and float64)."""
    inputs = np.load(DATA / "attnlrp_reference.npz")
    model = lxt_vit(dtype)
    res = compute_maps(model, torch.from_numpy(inputs["x"]).to(dtype),
                       [create_method("legrad", layers=layers, batch_size=2)], target=inputs["targets"].tolist())
    got, want = res.maps["legrad"], ref[f"{key}_map"]
    assert got.maps.shape == want.shape == (3, 4, 4)
    assert got.extras["per_layer"].shape == (3, 2 if layers is None else 1, 4, 4)
    np.testing.assert_allclose(got.maps.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("layers, key", [(None, "all"), (1, "last1")])
def test_timm_vit_equals_torchcam(ref, layers, key):
    """timm's ViT with the same weights (its fused attention switched off for the pass). Measured
    with timm 1.0.31, torch 2.14.1: 7e-8 of the largest value."""
    inputs = np.load(DATA / "attnlrp_reference.npz")
    res = compute_maps(timm_lxt_vit(), torch.from_numpy(inputs["x"]).double(), [create_method("legrad", layers=layers)],
                       target=inputs["targets"].tolist())
    want = ref[f"{key}_map"]
    np.testing.assert_allclose(res.maps["legrad"].maps.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_headless_scores_the_norm_and_cnns_are_skipped():
    res = compute_maps(tiny_vit(), torch.randn(2, 3, 32, 32), [create_method("legrad")])
    assert res.target_kind == "cls-norm" and res.maps["legrad"].maps.shape == (2, 4, 4)
    assert (res.maps["legrad"].maps >= 0).all() and res.maps["legrad"].maps.max() > 0
    res = compute_maps(QuadrantCNN(), torch.rand(1, 3, 8, 8), [create_method("legrad")])
    assert "no readable attention" in res.skipped["legrad"]


def test_registry_entry_and_options():
    assert "legrad" not in default_methods()
    assert describe_method("legrad")["cost"].startswith("1 forward + 1 backward per image of its own")
    assert parse_method_options(["legrad.layers=4"]) == {"legrad": {"layers": 4}}
    with pytest.raises(UsageError, match="layers must be >= 1"):
        parse_method_options(["legrad.layers=0"])
