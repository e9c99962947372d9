"""Registry, ViT layout and forward, position-embedding resampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from auditor.errors import ModelNotFoundError
from auditor.models import create_model, list_models, resolve_model

from conftest import TINY, tiny_vit


def test_registry_lists_the_vit_family():
    assert {"vit_tiny", "vit_small", "vit_base"} <= set(list_models())


def test_unknown_model_message_lists_names_and_the_two_other_ways():
    with pytest.raises(ModelNotFoundError) as e:
        create_model("vit_giant")
    msg = str(e.value)
    assert "Cannot find model 'vit_giant'" in msg
    assert "vit_small" in msg and "models/__init__.py" in msg and "--model package.module:factory" in msg


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_and_backward(name):
    tiny = TINY if name.startswith("vit_") else {}  # width / depth / heads are ViT arguments
    model = create_model(name, **tiny, image_size=(32, 48), patch_size=8, num_classes=3)
    x = torch.randn(2, 3, 32, 48, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_timm_dino_parameter_names():
    keys = set(create_model("vit_small", depth=1, num_classes=5).state_dict())
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
                "blocks.0.attn.proj.weight", "blocks.0.norm2.bias", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias",
                "norm.weight", "head.weight", "head.bias"}
    assert expected <= keys
    assert create_model("vit_small").pos_embed.shape == (1, 197, 384)
    assert "head.weight" not in create_model("vit_small", depth=1).state_dict()  # headless by default


def reference_vit(sd: dict, x: torch.Tensor, heads: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A straightforward ViT forward from a state_dict: logits and the last block's attention."""
    tok = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    tok = torch.cat([sd["cls_token"].expand(len(x), -1, -1), tok], 1) + sd["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    c = tok.shape[-1]
    for i in range(depth):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(tok, (c,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        q, k, v = (h @ p("attn.qkv.weight").T + p("attn.qkv.bias")).split(c, dim=-1)
        split = lambda t: t.reshape(len(x), -1, heads, c // heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(len(x), -1, c)
        tok = tok + o @ p("attn.proj.weight").T + p("attn.proj.bias")
        h = F.layer_norm(tok, (c,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        h = F.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
        tok = tok + h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    cls = F.layer_norm(tok, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]
    return cls @ sd["head.weight"].T + sd["head.bias"], attn


def test_logits_and_last_attention_equal_a_reference_forward():
    from auditor.methods import compute_maps, create_method

    model = tiny_vit(num_classes=7, image_size=(32, 48))
    with torch.no_grad():  # make the biases non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 3, 32, 48)
    ref_logits, ref_attn = reference_vit(model.state_dict(), x, heads=3, patch=8)
    res = compute_maps(model, x, [create_method("cls_attention")])
    torch.testing.assert_close(res.output, ref_logits, atol=1e-5, rtol=1e-5)
    per_head = res.maps["cls_attention"].extras["per_head"]  # B x heads x h x w
    torch.testing.assert_close(per_head.flatten(2), ref_attn[:, :, 0, 1:], atol=1e-5, rtol=1e-5)


def test_position_embeddings_are_resampled_for_another_input_size():
    model = tiny_vit()
    out = model.forward_features(torch.randn(1, 3, 48, 64))
    assert out.shape == (1, 1 + 6 * 8, 48)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 30, 32))


def test_resample_pos_embed_keeps_a_constant_embedding_constant():
    from auditor.models.vit import resample_pos_embed

    pe = torch.cat([torch.zeros(1, 1, 2), torch.full((1, 16, 2), 3.0)], dim=1)
    out = resample_pos_embed(pe, (6, 5))
    assert out.shape == (1, 31, 2)
    torch.testing.assert_close(out[:, 1:], torch.full((1, 30, 2), 3.0))


def test_user_models_package_in_the_working_directory(tmp_path, monkeypatch):
    pkg = tmp_path / "models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from .net import my_net\n"
    )
    (pkg / "net.py").write_text(
        "import torch.nn as nn\n"
        "def my_net(num_classes=0, patch_size=16):\n"
        "    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n"
        "    m.patch_size = patch_size\n"
        "    return m\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "models", raising=False)
    model = resolve_model("my_net", patch_size=8, num_classes=0, image_size=64)  # image_size is filtered out
    assert model.patch_size == 8
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 2)


def test_factory_spec(tmp_path, monkeypatch):
    (tmp_path / "myfactory.py").write_text(
        "import torch.nn as nn\ndef build(**kw):\n    m = nn.Linear(2, 2)\n    m.kw = kw\n    return m\n"
        "def not_a_model():\n    return 3\n"
    )
    monkeypatch.chdir(tmp_path)
    model = resolve_model(factory="myfactory:build", num_classes=4)
    assert model.kw == {"num_classes": 4}
    with pytest.raises(ModelNotFoundError, match="not a torch.nn.Module"):
        resolve_model(factory="myfactory:not_a_model")
    with pytest.raises(ModelNotFoundError, match="Cannot import 'nope'"):
        resolve_model(factory="nope:build")
