"""AttnLRP: equal to lxt 2.1's relevance on a ViT with the same weights, hand-computable rules
(identity rule, LayerNorm, uniform rule, CP-LRP, conservation), scope and hook hygiene."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from auditor.errors import UsageError
from auditor.methods import compute_maps, create_method, default_methods, describe_method, parse_method_options
from auditor.methods.attnlrp import lrp_rules
from auditor.models.vit import VisionTransformer

from conftest import tiny_vit
from test_methods import QuadrantCNN, _hook_count

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ref():
    return np.load(DATA / "attnlrp_reference.npz")


def lxt_vit(dtype: torch.dtype) -> VisionTransformer:
    """The built-in ViT with the weights of tests/data/make_attnlrp_reference.py's torchvision ViT."""
    cfg = json.loads(str(np.load(DATA / "attnlrp_reference.npz")["meta"]))["config"]
    model = VisionTransformer(img_size=cfg["image_size"], patch_size=cfg["patch_size"], embed_dim=cfg["hidden_dim"],
                              depth=cfg["num_layers"], num_heads=cfg["num_heads"],
                              mlp_ratio=cfg["mlp_dim"] / cfg["hidden_dim"], num_classes=cfg["num_classes"])
    model.load_state_dict({k: v.float() for k, v in load_file(DATA / "attnlrp_vit.safetensors").items()})
    return model.to(dtype).eval()


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_relevance_equals_lxt(ref, attention, dtype):
    """lxt 2.1 (commit 3cd6d0d3) on torchvision's ViT, float64, ``(input * input.grad).sum(1)``;
    ours on the built-in ViT with the same weights: equal to 1e-5 of the largest |relevance|."""
    model = lxt_vit(dtype)
    x = torch.from_numpy(ref["x"]).to(dtype)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).double().numpy(), ref["logits"], rtol=0, atol=1e-5)
    res = compute_maps(model, x, [create_method("attnlrp", attention=attention, batch_size=2)],
                       target=ref["targets"].tolist())
    want = ref[f"{attention}_relevance"]
    got = res.maps["attnlrp"].maps.numpy()
    assert got.shape == (3, 64, 64) and res.maps["attnlrp"].info["attention_rule"] == attention
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # the rules matter: the plain gradient x input is far from both
    assert np.abs(ref["gradient_x_input"] - want).max() > 0.3 * np.abs(want).max()


def timm_lxt_vit() -> torch.nn.Module:
    """timm's ViT (float64) with the weights of :func:`lxt_vit`; the test is skipped without timm."""
    timm = pytest.importorskip("timm", reason="timm is an optional extra: pip install 'attention-auditor[timm]'")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, embed_dim=64, depth=2,
                              num_heads=4, mlp_ratio=2.0, num_classes=10)
    model.load_state_dict({k: v.float() for k, v in load_file(DATA / "attnlrp_vit.safetensors").items()})
    return model.double().eval()


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_timm_vit_with_fused_attention_equals_lxt(ref, attention):
    """timm's ViT (``fused_attn``: scaled_dot_product_attention, whose backward is the exact softmax
    gradient the rules need) with the same weights. Measured with timm 1.0.31, torch 2.14.1: 8e-8 and
    1e-7 of the largest |relevance|."""
    res = compute_maps(timm_lxt_vit(), torch.from_numpy(ref["x"]).double(),
                       [create_method("attnlrp", attention=attention)], target=ref["targets"].tolist())
    want = ref[f"{attention}_relevance"]
    np.testing.assert_allclose(res.maps["attnlrp"].maps.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _run_rules(module: nn.Module, x: torch.Tensor, weights: torch.Tensor, attention: str = "attnlrp"):
    """Relevance ``x * grad`` of ``sum(weights * module(x))`` under the rules, and that score."""
    x = x.clone().requires_grad_(True)
    with lrp_rules(module, attention):
        score = (module(x) * weights).sum()
        (grad,) = torch.autograd.grad(score, x)
    return (x * grad).detach(), score.detach()


def test_gelu_identity_rule_passes_relevance_unchanged():
    """Paper Eq. 9: the relevance of ``gelu(x)`` reaches ``x`` unchanged: ``R_x = gelu(x) * w``."""
    x = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    w = torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64)
    rel, score = _run_rules(nn.GELU(), x, w)
    torch.testing.assert_close(rel, torch.nn.functional.gelu(x) * w)
    assert not torch.allclose(rel, x * torch.func.grad(lambda t: (torch.nn.functional.gelu(t) * w).sum())(x))


def test_layer_norm_is_linear_with_the_std_detached():
    """``x = [1, 2, 3]``, no affine, target ``y_0``: the gradient is the centring row ``[2, -1, -1] / 3``
    over ``std = sqrt(2/3 + eps)``, so ``R = [2/3, -2/3, -1] / std`` and ``sum(R) = y_0`` (conserved)."""
    ln = nn.LayerNorm(3, eps=1e-5, elementwise_affine=False).double()
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    rel, score = _run_rules(ln, x, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    std = (2 / 3 + 1e-5) ** 0.5
    torch.testing.assert_close(rel, torch.tensor([[2 / 3, -2 / 3, -1.0]], dtype=torch.float64) / std)
    torch.testing.assert_close(rel.sum(), score)


def uniform_attention_vit(num_classes: int = 4) -> VisionTransformer:
    """One block, ``q = k = 0`` (uniform attention, softmax input 0), MLP output 0, every bias, the
    CLS token and the position embeddings 0: the logit reaches the pixels only through ``A v``."""
    torch.manual_seed(3)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                              num_classes=num_classes).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("cls_token", "pos_embed") or name.endswith("mlp.fc2.weight"):
                p.zero_()
            elif name.endswith("norm1.weight") or name.endswith("norm.weight") or name.endswith("norm2.weight"):
                p.uniform_(0.5, 1.5)
        model.blocks[0].attn.qkv.weight[:32].zero_()  # q and k
    return model


@pytest.mark.parametrize("attention, share", [("attnlrp", 0.5), ("cp", 1.0)])
def test_uniform_rule_gives_v_half_of_the_attention_output(attention, share):
    """With the softmax input 0 its relevance ``x (R - s sum R)`` is 0; the uniform rule (Eq. 7) gives
    ``v`` half of ``A v``'s relevance, so the pixels hold half the logit. CP-LRP keeps all of it in ``v``
    (A is a constant): the pixels hold the whole logit (the model is then linear: exact conservation)."""
    model = uniform_attention_vit()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    res = compute_maps(model, x, [create_method("attnlrp", attention=attention)], target=[1, 2])
    with torch.no_grad():
        logits = model(x)[[0, 1], [1, 2]]
    torch.testing.assert_close(res.maps["attnlrp"].maps.double().sum((1, 2)), share * logits, rtol=1e-5, atol=1e-6)


def test_cls_norm_target_of_a_headless_vit_is_conserved():
    """A headless ViT explains the CLS-output norm (degree-1 homogeneous): in the linear CP case the
    pixels hold exactly that norm."""
    model = uniform_attention_vit(num_classes=0)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    res = compute_maps(model, x, [create_method("attnlrp", attention="cp")])
    assert res.target_kind == "cls-norm"
    with torch.no_grad():
        norms = model(x).norm(dim=-1)
    torch.testing.assert_close(res.maps["attnlrp"].maps.double().sum((1, 2)), norms, rtol=1e-5, atol=1e-6)


def test_prototype_target_uses_the_support_images():
    """Cosine similarity is degree-0 homogeneous in the query's tokens: in the linear CP case the
    query's relevance sums to 0, while the map itself is not 0."""
    model = uniform_attention_vit(num_classes=0)
    gen = torch.Generator().manual_seed(6)
    x, support = (torch.randn(n, 3, 32, 32, dtype=torch.float64, generator=gen) for n in (2, 3))
    res = compute_maps(model, x, [create_method("attnlrp", attention="cp")], target="prototype", support=support)
    maps = res.maps["attnlrp"].maps.double()
    assert res.target_kind == "prototype" and maps.shape == (2, 32, 32)
    assert maps.abs().max() > 1e-3
    torch.testing.assert_close(maps.sum((1, 2)), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)


def test_rules_leave_the_model_as_it_was():
    model = tiny_vit(num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    before = model(x).detach()
    compute_maps(model, x, [create_method("attnlrp")])
    assert _hook_count(model) == 0
    torch.testing.assert_close(model(x).detach(), before, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), lrp_rules(model):
        raise RuntimeError("boom")
    assert _hook_count(model) == 0


def test_models_without_rules_are_skipped_with_the_reason():
    res = compute_maps(QuadrantCNN(), torch.rand(1, 3, 8, 8), [create_method("attnlrp")])
    assert "ViTs with timm / DINO blocks" in res.skipped["attnlrp"]
    model = tiny_vit(num_classes=3)
    model.blocks[1].mlp.act = nn.SiLU()
    res = compute_maps(model, torch.randn(1, 3, 32, 32), [create_method("attnlrp")])
    assert res.skipped["attnlrp"] == "attnlrp has no LRP rule for blocks.1.mlp.act (SiLU)"


def test_registry_entry_and_options():
    info = describe_method("attnlrp")
    assert info["cost"].startswith("1 forward + 1 backward per image of its own")
    assert info["options"]["attention"] == {"type": "str", "default": "attnlrp", "choices": ("attnlrp", "cp")}
    assert "attnlrp" not in default_methods()
    assert parse_method_options(["attnlrp.attention=cp"]) == {"attnlrp": {"attention": "cp"}}
    with pytest.raises(UsageError, match="choose one of attnlrp, cp"):
        parse_method_options(["attnlrp.attention=full"])
    with pytest.raises(UsageError, match="batch_size must be >= 1"):
        parse_method_options(["attnlrp.batch_size=0"])
