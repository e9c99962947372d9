"""Window attention on timm's and transformers' Swin, against values their own code computed.

Reference: tests/data/make_swin_window_reference.py (timm 1.0.31, transformers 5.24.0, torch 2.14.1;
versions stored in the npz). It read each block's window layout with the library's own partition
code on token indices, computed the probabilities by hand (softmax(q k^T * scale + relative
position bias + shift mask), checked against timm's softmax and transformers' output_attentions)
and the expected map in numpy. The layout and map tests run without either library; the
end-to-end ones skip when timm / transformers is not installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.methods import compute_maps, create_method
from auditor.methods.window_attention import block_maps
from auditor.models.windows import WindowBlock, shift_mask, stage_grids, to_patch_grid, token_windows

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "swin_window_reference.npz"
#: the libraries' orders of padding and cyclic roll before the partition
ORDER = {"timm": "roll_then_pad", "hf": "pad_then_roll"}
KEYS = [f"{lib}/{size}" for lib in ("timm", "hf") for size in ("native", "big")]
needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
needs_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def blocks_of(ref: dict, key: str) -> int:
    return sum(1 for k in ref if k.startswith(f"{key}/probs."))


def pattern_input(shape) -> torch.Tensor:
    from test_vit_variants import pattern_levels

    return torch.from_numpy((pattern_levels(tuple(int(s) for s in shape)).astype(np.float32) - 8.0) / 4.0)


def our_block(ref: dict, key: str, i: int) -> WindowBlock:
    """The block's layout by our geometry alone, from its grid, window and shift."""
    grid = tuple(int(v) for v in ref[f"{key}/grid.{i}"])
    wh, ww, sh, sw = (int(v) for v in ref[f"{key}/window.{i}"])
    patch = tuple(int(v) // 4 for v in ref[f"{key}/shape"][-2:])
    stride = 1
    while stage_grids(patch, 8)[stride.bit_length() - 1] != grid:
        stride *= 2
    return WindowBlock(f"block{i}", "", grid, stride, patch, token_windows(grid, (wh, ww), (sh, sw), ORDER[key[:key.index("/")]]),
                       shift_mask(grid, (wh, ww), (sh, sw)), (wh, ww), (sh, sw))


def test_token_windows_by_hand():
    """A 3 x 5 grid, 2 x 2 windows, shift 1: pad (to 4 x 6) then roll, or roll then pad."""
    assert token_windows((2, 3), (2, 2), (0, 0)).tolist() == [[0, 1, 3, 4], [2, -1, 5, -1]]
    grid = (3, 5)
    pad_roll = token_windows(grid, (2, 2), (1, 1), "pad_then_roll")
    roll_pad = token_windows(grid, (2, 2), (1, 1), "roll_then_pad")
    # padded grid rows: [0..4, -1], [5..9, -1], [10..14, -1], [-1]*6; rolled by (-1, -1): first window = rows 1-2, cols 1-2
    assert pad_roll[0].tolist() == [6, 7, 11, 12]
    assert pad_roll[-1].tolist() == [-1, -1, -1, 0]  # the wrapped corner: padding, then the grid's first token
    # rolled 3 x 5 grid first (row 0 = old row 1 from col 1), then padded: the last column and row are padding
    assert roll_pad[0].tolist() == [6, 7, 11, 12]
    assert roll_pad[2].tolist() == [5, -1, 10, -1]
    assert roll_pad[-1].tolist() == [0, -1, -1, -1]  # the first token wrapped into the real corner
    with pytest.raises(ValueError, match="order"):
        token_windows(grid, (2, 2), (1, 1), "sideways")


def test_shift_mask_by_hand():
    """4 x 4 grid, window 2, shift 1: regions rows/cols [0, 2), [2, 3), [3, 4); the last window has 4 regions."""
    mask = shift_mask((4, 4), (2, 2), (1, 1))
    assert mask.shape == (4, 4, 4)
    assert (mask[0] == 0).all()
    assert (mask[-1] == -100).sum() == 12 and (mask[-1].diagonal() == 0).all()
    assert shift_mask((4, 4), (2, 2), (0, 0)) is None


def test_to_patch_grid_repeats_each_merged_token_over_its_patches():
    stage = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # a 3 x 3 patch grid merged (padded to 4 x 4) into 2 x 2
    assert to_patch_grid(stage, 2, (3, 3)).tolist() == [[1, 1, 2], [1, 1, 2], [3, 3, 4]]
    assert stage_grids((30, 20), 3) == [(30, 20), (15, 10), (8, 5)]


@pytest.mark.parametrize("key", KEYS)
def test_window_layout_equals_the_librarys_own_partition(ref, key):
    """Every block's slot -> token table and shift mask, ours vs the library's own code (roll undone)."""
    for i in range(blocks_of(ref, key)):
        blk = our_block(ref, key, i)
        np.testing.assert_array_equal(blk.windows.numpy(), ref[f"{key}/windows.{i}"], err_msg=f"{key} block {i}")
        want = ref[f"{key}/mask.{i}"]
        if want.size == 0:
            assert blk.mask is None
        else:
            np.testing.assert_array_equal(blk.mask.numpy(), want)


@pytest.mark.parametrize("key", KEYS)
def test_window_attention_map_from_the_librarys_probabilities(ref, key):
    """Our map of each block (received beyond the uniform share, stage -> patch grid) from the stored probabilities."""
    for i in range(blocks_of(ref, key)):
        probs = torch.from_numpy(ref[f"{key}/probs.{i}"])
        excess, _ = block_maps(probs.reshape(-1, *probs.shape[2:]), our_block(ref, key, i))
        np.testing.assert_allclose(excess.mean(1).numpy(), ref[f"{key}/per_layer"][:, i], rtol=1e-5, atol=1e-5)


# float32 softmax probabilities after a stage or two: up to ~1.7e-6 apart between CPUs (11 of 12,288
# values above 1e-6 on a 2026-12 CI VM against the reference machine)
PROB_ATOL = 5e-6


def check_pass(ref: dict, key: str, model: torch.nn.Module):
    x = pattern_input(ref[f"{key}/shape"])
    res = compute_maps(model, x, [create_method("window_attention"), create_method("gradcam")], target="predicted")
    assert "window_attention" in res.maps, res.skipped
    got = res.maps["window_attention"]
    np.testing.assert_allclose(res.output.numpy(), ref[f"{key}/logits"], rtol=1e-5, atol=1e-5)
    for i in range(blocks_of(ref, key)):
        np.testing.assert_allclose(got.extras[f"probabilities.{i}"].numpy(), ref[f"{key}/probs.{i}"], atol=PROB_ATOL)
    np.testing.assert_allclose(got.extras["per_layer"].numpy(), ref[f"{key}/per_layer"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.maps.numpy(), ref[f"{key}/per_layer"][:, -1], rtol=1e-4, atol=1e-4)
    assert got.maps.shape[-2:] == tuple(int(s) // 4 for s in ref[f"{key}/shape"][-2:])  # the patch grid
    assert "gradcam" in res.maps
    return got


@needs_timm
@pytest.mark.parametrize("size", ["native", "big"])
def test_timm_swin_window_attention_equals_the_reference(ref, size):
    """timm SwinTransformer (3 stages: 12x10 padded, 6x5 padded + shifted, 3x3 narrowed window; and a 30x20 grid)."""
    from timm.models.swin_transformer import SwinTransformer

    from auditor.models._checkpoint import load_checkpoint

    model = SwinTransformer(img_size=(48, 40), patch_size=4, embed_dim=24, depths=(2, 2, 2), num_heads=(2, 4, 4),
                            window_size=4, num_classes=5, strict_img_size=False).eval()
    load_checkpoint(model, DATA / "lib_timm_swin_windows.safetensors")
    fused = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    check_pass(ref, f"timm/{size}", model)
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == fused  # restored after the pass


@needs_hf
@pytest.mark.parametrize("size", ["native", "big"])
def test_hf_swin_window_attention_through_the_hf_route(ref, size):
    """--model hf:PATH (transformers SwinForImageClassification, 2 stages): probabilities equal
    transformers' own (output_attentions for each stage's last block, by hand for the others)."""
    from auditor.models import build_model

    got = check_pass(ref, f"hf/{size}", build_model(factory=f"hf:{DATA / 'hf_swin_windows'}").model)
    own = [k for k in ref if k.startswith(f"hf/{size}/own_attention.")]
    assert len(own) == 2  # one per stage
    for k in own:
        np.testing.assert_allclose(got.extras[f"probabilities.{k.rsplit('.', 1)[1]}"].numpy(), ref[k], atol=PROB_ATOL)
