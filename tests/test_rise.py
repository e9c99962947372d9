"""RISE equals the authors' code (github.com/eclique/RISE ``explanations.py``) on the same masks.

Reference values: tests/data/rise_reference.npz, written by tests/data/make_rise_reference.py in a
throwaway venv with torch==2.14.1, timm==1.0.31, scikit-image==0.26.0, numpy==2.4.6,
safetensors==0.8.0, Python 3.11.7, eclique/RISE at d91ea006d4bb9b7990347fe97086bdc0f5c1fe10
(stored in the npz under ``versions``; settings under ``configs``). Models: the timm ViT (64 x 96)
and SmallCNN (32 x 32) of tests/test_reference_values.py, same weights and inputs.

The authors draw their masks with numpy's global generator; the script stored those grids and
crop offsets, and the test feeds them to our ``rise`` in place of its own seeded draw. Tolerances:
masks (our interpolation matrices vs scikit-image's ``resize``) 1e-6 absolute; maps 1e-5 x the
reference's largest |value|. Observed (torch 2.13 CPU): masks exactly equal, maps <= 3.7e-7 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import UsageError
from auditor.methods import compute_maps, create_method, describe_method
from auditor.methods.rise import grid_masks, interpolation_matrix

from test_reference_values import levels_to_input, max_diff
from test_reference_values import cnn, vit  # noqa: F401  (pytest fixtures)

REFERENCE = Path(__file__).resolve().parent / "data" / "rise_reference.npz"
TOL_MASK, TOL_REL = 1e-6, 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


with np.load(REFERENCE) as _f:
    CONFIGS = json.loads(str(_f["configs"]))


def fed(cfg: dict, grid: np.ndarray, shifts: np.ndarray, batch_size: int):
    """Our rise with the reference's grids and offsets in place of its own draw."""
    method = create_method("rise", n_masks=cfg["n_masks"], cells=cfg["cells"], p=cfg["p"], score=cfg["score"],
                           batch_size=batch_size)
    method.draw_masks = lambda size: (torch.from_numpy(grid), torch.from_numpy(shifts))
    return method


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_masks_equal_the_authors(ref, name):
    h, w = ref[f"{name}/masks"].shape[-2:]
    ours = grid_masks(torch.from_numpy(ref[f"{name}/grid"][:4]), torch.from_numpy(ref[f"{name}/shifts"][:4]), (h, w))
    assert max_diff(ours.numpy(), ref[f"{name}/masks"]) <= TOL_MASK


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_maps_equal_the_authors_on_the_same_masks(vit, cnn, ref, name):
    cfg = CONFIGS[name]
    prefix = cfg["model"]
    model = vit if prefix == "vit" else cnn
    x = levels_to_input(ref[f"{prefix}_x_levels"])
    method = fed(cfg, ref[f"{name}/grid"], ref[f"{name}/shifts"], batch_size=7)  # chunks cut across images
    res = compute_maps(model, x, [method], target=ref[f"{prefix}_targets"].tolist())
    expected = ref[f"{name}/maps"]
    ours = res.maps["rise"].maps.numpy()
    assert ours.shape == expected.shape
    assert max_diff(ours, expected) <= TOL_REL * np.abs(expected).max(), max_diff(ours, expected)


def test_interpolation_matrix_hand_values():
    """2 cells -> 4 pixels: samples at -0.25, 0.25, 0.75, 1.25; mirrored: 0.25, 0.25, 0.75, 0.75."""
    expected = [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]]
    torch.testing.assert_close(interpolation_matrix(2, 4), torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(interpolation_matrix(5, 18).sum(1), torch.ones(18, dtype=torch.float64))


def test_a_model_that_scores_one_pixel_gets_the_mean_mask_value_there():
    """score = the masked image's value at pixel (2, 5) (input 1 there): saliency = sum_i M_i(2,5) M_i / (N p)."""

    class Pixel(torch.nn.Module):
        def forward(self, x):
            return x[:, 0, 2, 5, None].repeat(1, 2)

    x = torch.zeros(1, 3, 8, 8)
    x[:, :, 2, 5] = 1
    method = create_method("rise", n_masks=16, cells=2, p=0.5, score="raw", batch_size=5)
    res = compute_maps(Pixel(), x, [method], target=[0]).maps["rise"].maps[0]
    masks = grid_masks(*method.draw_masks((8, 8)), (8, 8))
    torch.testing.assert_close(res, (masks[:, 2, 5, None, None] * masks).sum(0) / (16 * 0.5))


def test_the_seeded_masks_do_not_depend_on_the_batch_size(cnn, ref):
    x = levels_to_input(ref["cnn_x_levels"])
    maps = [compute_maps(cnn, x, [create_method("rise", n_masks=12, cells=4, batch_size=bs)],
                        target=[0, 2]).maps["rise"].maps for bs in (1, 5, 64)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-7)
    torch.testing.assert_close(maps[0], maps[2], rtol=0, atol=1e-7)
    other = compute_maps(cnn, x, [create_method("rise", n_masks=12, cells=4, seed=1)], target=[0, 2]).maps["rise"].maps
    assert not torch.allclose(maps[0], other)


def test_the_draw_keeps_p_of_the_cells_and_shifts_within_one_cell():
    grid, shifts = create_method("rise", n_masks=4000, cells=7, p=0.3).draw_masks((224, 160))
    assert abs(grid.float().mean().item() - 0.3) < 0.01
    assert shifts[:, 0].max().item() == 31 and shifts[:, 1].max().item() == 22  # ceil(224 / 7) - 1, ceil(160 / 7) - 1
    assert shifts.min().item() == 0


@pytest.mark.parametrize("kwargs", [{"n_masks": 0}, {"cells": 1}, {"p": 0.0}, {"p": 1.5}, {"score": "logit"}])
def test_bad_options_are_usage_errors(kwargs):
    with pytest.raises(UsageError, match="rise"):
        create_method("rise", **kwargs)


def test_a_cls_norm_target_needs_the_raw_score():
    from conftest import tiny_vit

    x = torch.zeros(1, 3, 32, 32)
    res = compute_maps(tiny_vit(num_classes=0), x, [create_method("rise", n_masks=4)], target="cls-norm")
    assert "rise.score=raw" in res.skipped["rise"]
    res = compute_maps(tiny_vit(num_classes=0), x, [create_method("rise", n_masks=4, score="raw")], target="cls-norm")
    assert res.maps["rise"].maps.shape == (1, 32, 32)


def test_describe_gives_the_cost_and_options():
    d = describe_method("rise")
    assert d["cost"] == "n_masks forwards per image (masked copies), batched; no backward"
    assert set(d["options"]) == {"n_masks", "cells", "p", "score", "seed", "batch_size"}
    assert d["options"]["score"]["choices"] == ("probability", "raw")
