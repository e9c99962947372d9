"""DINOv2 (official and timm layouts, with and without registers) and distilled DeiT checkpoints
load into the built-in ViT without timm, and every map reads the right tokens.

Reference values were computed once outside the project (timm, pytorch-grad-cam and the
official DINOv2 code are NOT installed in CI) by tests/data/make_vit_variants_reference.py with
torch==2.14.1, timm==1.0.31, grad-cam==1.5.7, numpy==2.4.6, safetensors==0.8.0 and
facebookresearch/dinov2@b8931f7 (also stored in the npz under ``versions``). Each model is
small (embed 32, depth 2, 2 heads) with random weights, random LayerNorm weights and random
prefix tokens; ``native`` is its training size (two images), ``big`` a 30 x 20 patch grid (one
image, 420 x 280 or 480 x 320 pixels), which makes every model resize its position embeddings.

References: logits (or a headless model's CLS feature) from the library's own forward; the
CLS row of ``softmax(q k^T * scale)`` per layer and head, computed by hand from each block's
``attn.qkv`` input; rollout (head mean, ``0.5 A + 0.5 I``, all tokens) in float64; raw Grad-CAM
of pytorch-grad-cam on ``blocks[-1].norm1`` with a reshape transform that drops exactly the
prefix tokens (CLS, distillation, registers).

Tolerances (max abs difference, observed with torch 2.13 CPU in brackets): logits 1e-5 [timm
models 0.0; official DINOv2 1.1e-6: it runs SDPA, we run the explicit softmax]; attention 1e-5;
rollout 1e-5 [4.3e-8]; Grad-CAM 1e-4 x max|ref| (float32 sums over up to 605 tokens).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.methods import compute_maps, create_method
from auditor.models import build_model
from auditor.models.adapters import adapter_for

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "vit_variants_reference.npz"
SMALL = dict(embed_dim=32, depth=2, num_heads=2)
TARGETS = [1, 3]
#: name -> (native input size, prefix tokens, layout the checkpoint's keys must give)
MODELS = {
    "timm_dinov2": ((56, 84), 1, dict(reg_tokens=0, distilled=False, no_embed_class=False, pos_interpolation="timm")),
    "timm_dinov2_reg": ((56, 56), 5, dict(reg_tokens=4, reg_layout="timm", no_embed_class=True,
                                          pos_interpolation="timm")),
    "official_dinov2": ((56, 56), 1, dict(reg_tokens=0, no_embed_class=False, pos_interpolation="dinov2")),
    "official_dinov2_reg": ((56, 56), 5, dict(reg_tokens=4, reg_layout="dinov2", no_embed_class=False,
                                              pos_interpolation="timm")),
    "timm_deit_distilled": ((64, 96), 2, dict(distilled=True, no_embed_class=False, pos_interpolation="timm")),
}
CASES = [(name, tag) for name in MODELS for tag in ("native", "big")]
ATTR = {"reg_tokens": "num_reg_tokens"}


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def load(name: str):
    size = MODELS[name][0]
    return build_model("vit_small", checkpoint=DATA / f"vit_{name}.safetensors", image_size=size, **SMALL).model


def pattern_levels(shape: tuple[int, ...]) -> np.ndarray:
    """The big inputs' levels, as make_vit_variants_reference.pattern_levels builds them."""
    idx = np.indices(shape, dtype=np.uint64)
    h = idx[-1] * np.uint64(2654435761) + idx[-2] * np.uint64(40503) + idx[-3] * np.uint64(97) + idx[0] * np.uint64(7)
    return ((h >> np.uint64(5)) % np.uint64(16)).astype(np.uint8)


def inputs(ref, name: str, tag: str) -> torch.Tensor:
    u = ref[f"{name}/{tag}/levels"] if tag == "native" else pattern_levels(tuple(ref[f"{name}/{tag}/shape"]))
    return torch.from_numpy((u.astype(np.float32) - 8.0) / 4.0)


def max_diff(a, b) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_reference_records_versions(ref):
    versions = dict(v.split("==", 1) for v in ref["versions"])
    assert {"torch", "timm", "grad-cam", "dinov2"} <= set(versions)


@pytest.mark.parametrize("name", MODELS)
def test_layout_is_read_from_the_checkpoint_keys(name, ref):
    model = load(name)
    size, prefix, layout = MODELS[name]
    assert model.num_prefix_tokens == prefix == int(ref[f"{name}/prefix"]) == adapter_for(model).prefix_tokens()
    for key, want in layout.items():
        assert getattr(model, ATTR.get(key, key)) == want, key
    assert ("head_dist.weight" in model.state_dict()) == (name == "timm_deit_distilled")


@pytest.mark.parametrize("name,tag", CASES)
def test_logits_equal_the_library(name, tag, ref):
    model = load(name)
    with torch.no_grad():
        out = model(inputs(ref, name, tag))
    assert out.shape == ref[f"{name}/{tag}/logits"].shape
    assert max_diff(out, ref[f"{name}/{tag}/logits"]) <= 1e-5


def _grid(ref, name: str, tag: str) -> tuple[int, int]:
    p = int(ref[f"{name}/patch"])
    h, w = ref[f"{name}/{tag}/shape"][-2:]
    return h // p, w // p


@pytest.mark.parametrize("name,tag", CASES)
def test_cls_attention_per_layer_and_head_reads_the_patch_columns(name, tag, ref):
    model, x = load(name), inputs(ref, name, tag)
    grid, prefix = _grid(ref, name, tag), MODELS[name][1]
    if tag == "big":
        assert grid == (30, 20)
    cls_rows = ref[f"{name}/{tag}/cls_attention"]  # L x B x heads x T
    for layer in range(cls_rows.shape[0]):
        res = compute_maps(model, x, [create_method("cls_attention", layer=layer)]).maps["cls_attention"]
        want = cls_rows[layer][..., prefix:].reshape(*cls_rows.shape[1:3], *grid)
        assert res.extras["per_head"].shape == want.shape
        assert max_diff(res.extras["per_head"], want) <= 1e-5
        assert max_diff(res.maps, want.mean(1)) <= 1e-5
        # registers / distillation token never in the map: its mass is the row minus the prefix columns
        mass = res.extras["per_head"].sum((-2, -1)).numpy()
        np.testing.assert_allclose(mass, 1.0 - cls_rows[layer][..., :prefix].sum(-1), atol=1e-5)


@pytest.mark.parametrize("name,tag", CASES)
def test_rollout_runs_over_all_tokens_and_reads_the_cls_row_patches(name, tag, ref):
    model, x = load(name), inputs(ref, name, tag)
    grid, prefix = _grid(ref, name, tag), MODELS[name][1]
    res = compute_maps(model, x, [create_method("rollout")]).maps["rollout"]
    want = ref[f"{name}/{tag}/rollout"][:, prefix:].reshape(x.shape[0], *grid)
    assert max_diff(res.maps, want) <= 1e-5


@pytest.mark.parametrize("name,tag", CASES)
def test_gradcam_equals_pytorch_grad_cam_with_the_prefix_dropped(name, tag, ref):
    model, x = load(name), inputs(ref, name, tag)
    target = TARGETS[:x.shape[0]] if model.num_classes else None  # headless: the CLS norm, as the reference
    res = compute_maps(model, x, [create_method("gradcam")], target=target)
    assert res.target_kind == ("label" if model.num_classes else "cls-norm")
    assert res.maps["gradcam"].info["layer"] == "blocks.1.norm1"
    want = ref[f"{name}/{tag}/gradcam_raw"]
    assert res.maps["gradcam"].maps.shape == want.shape == (x.shape[0], *_grid(ref, name, tag))
    assert max_diff(res.maps["gradcam"].maps, want) <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("name,wrong", [("official_dinov2", "timm"), ("official_dinov2_reg", "dinov2")])
def test_the_position_resize_rule_matters(name, wrong, ref):
    """The other resize rule misses the library's logits at the 30 x 20 grid by far more than
    the tolerance (observed 0.037 and 0.053): the rule read from the keys is the one that fits."""
    model = build_model("vit_small", checkpoint=DATA / f"vit_{name}.safetensors", image_size=MODELS[name][0],
                        pos_interpolation=wrong, **SMALL).model
    with torch.no_grad():
        assert max_diff(model(inputs(ref, name, "big")), ref[f"{name}/big/logits"]) > 1e-2


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    from auditor.errors import CheckpointError

    sd = load_file(str(DATA / "vit_official_dinov2_reg.safetensors"))
    del sd["blocks.1.ls2.gamma"]
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): blocks\.1\.ls2\.gamma"):
        build_model("vit_small", checkpoint=tmp_path / "broken.safetensors", image_size=56, **SMALL)


@pytest.mark.parametrize("name", ["official_dinov2", "official_dinov2_reg"])
def test_official_dinov2_built_for_another_size_resizes_from_the_checkpoint_grid(name, ref):
    """Built for 224 x 224 (a 16 x 16 grid), an official DINOv2 model keeps the checkpoint's 4 x 4
    position grid and resizes from it at every forward, as the official code does: the library's
    logits at 56 x 56 and at the 30 x 20 grid come out unchanged. (Resizing once at load, as
    timm does for its own layouts, then again per forward missed them by up to 0.92.)"""
    model = build_model("vit_small", checkpoint=DATA / f"vit_{name}.safetensors", image_size=224, **SMALL).model
    assert model.pos_grid == (4, 4) and model.patch_embed.grid_size == (16, 16)
    for tag in ("native", "big"):
        with torch.no_grad():
            assert max_diff(model(inputs(ref, name, tag)), ref[f"{name}/{tag}/logits"]) <= 1e-5, tag
