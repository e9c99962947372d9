"""The model adapter is the one place that knows a family's layout; method options are typed,
validated and listed. Hand-built models with hand-computable answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from auditor.errors import UsageError
from auditor.methods import compute_maps, create_method, describe_method, list_methods, parse_method_options
from auditor.models import create_model, describe_model, list_models
from auditor.models.adapters import ModelAdapter, adapter_for

from conftest import TINY, tiny_vit


@pytest.mark.parametrize("build,family,prefix,layer", [
    (lambda: tiny_vit(), "vit", 1, "blocks.1.norm1"),
    (lambda: tiny_vit(reg_tokens=4), "vit", 5, "blocks.1.norm1"),
    (lambda: tiny_vit(distilled=True, num_classes=3), "vit", 2, "blocks.1.norm1"),
    (lambda: tiny_vit(use_mab=True, window_size=2), "multi_attention", 1, "blocks.1.attn.norm1"),
    (lambda: create_model("efficientnet_lite0", num_classes=4), "generic", 0, None),
])
def test_each_family_gets_its_adapter(build, family, prefix, layer):
    adapter = adapter_for(build())
    assert (adapter.family, adapter.prefix_tokens(), adapter.gradcam_layer()) == (family, prefix, layer)


def test_registers_and_distillation_token_sit_between_cls_and_patches():
    """Token order [CLS, dist, registers, patches] (timm): the patch tokens are the last h*w."""
    model = tiny_vit(distilled=True, reg_tokens=3, num_classes=2).eval()
    with torch.no_grad():
        model.cls_token.fill_(1.0)
        model.dist_token.fill_(2.0)
        model.reg_token.fill_(3.0)
        model.pos_embed.zero_()
        tokens = model._pos_embed(torch.zeros(1, 16, model.embed_dim), (4, 4))
    assert tokens[0, :, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0] + [0.0] * 16
    assert adapter_for(model).token_grid(32, 32, tokens.shape[1]) == ((4, 4), 5)


class FakeSwinBlockNorm(nn.Module):
    def forward(self, x):
        return x


class FakeTimmSwin(nn.Module):
    """Looks like timm's SwinTransformer to the adapter (class name + module, timm not imported):
    features NHWC ``B x 2 x 3 x 4``; the score is ``sum(w * features)`` so Grad-CAM is known."""

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].blocks = nn.ModuleList([nn.Module(), nn.Module()])
        for blk in self.layers[0].blocks:
            blk.norm1 = FakeSwinBlockNorm()
        self.w = torch.arange(4.0)  # one weight per channel
        self.stem = nn.Conv2d(3, 3, 1)  # the identity (an NCHW layer a user may name)
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(3)[:, :, None, None])
            self.stem.bias.zero_()

    def forward(self, x):  # x: B x 3 x 2 x 3 -> NHWC B x 2 x 3 x 4
        x = self.stem(x)
        feats = torch.cat([x, x[:, :1]], 1).permute(0, 2, 3, 1)
        feats = self.layers[0].blocks[1].norm1(feats)
        return (feats * self.w).sum((1, 2, 3))[:, None]


FakeTimmSwin.__name__ = "SwinTransformer"
FakeTimmSwin.__module__ = "timm.models.swin_transformer"


def test_timm_swin_gradcam_reads_nhwc_features():
    model = FakeTimmSwin()
    adapter = adapter_for(model)
    assert (adapter.family, adapter.gradcam_layout, adapter.gradcam_layer()) == ("timm_swin", "nhwc",
                                                                                  "layers.0.blocks.1.norm1")
    x = torch.arange(18.0).reshape(1, 3, 2, 3)
    res = compute_maps(model, x, [create_method("gradcam"), create_method("cls_attention")], target=[0])
    # d score / d feats[c] = w_c everywhere: weights = w; cam[i, j] = sum_c w_c feats[i, j, c]
    feats = torch.cat([x, x[:, :1]], 1)[0]
    want = (torch.arange(4.0)[:, None, None] * feats).sum(0)
    torch.testing.assert_close(res.maps["gradcam"].maps[0], want)
    assert "cls_attention" in res.skipped  # no CLS token, no readable attention
    # a conv layer named by the user stays NCHW: d score / d stem_c = w_c (+ w_3 for channel 0)
    res = compute_maps(model, x, [create_method("gradcam", layer="stem")], target=[0])
    torch.testing.assert_close(res.maps["gradcam"].maps[0], (torch.tensor([3.0, 1.0, 2.0])[:, None, None] * x[0]).sum(0))


def test_a_model_may_bring_its_own_adapter():
    class NoPrefix(ModelAdapter):
        family = "mine"

    model = tiny_vit()
    model.auditor_adapter = NoPrefix(model)
    res = compute_maps(model, torch.randn(1, 3, 32, 32), [create_method("cls_attention")])
    assert "no readable attention (mine layout" in res.skipped["cls_attention"]


class OneLayer(nn.Module):
    """One layer, one head, CLS + a 1 x 2 grid, attention fixed by hand."""

    num_prefix_tokens = 1
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Module()])
        self.blocks[0].attn = nn.Module()
        self.blocks[0].attn.attn_drop = nn.Identity()
        self.a = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
        self.head = nn.Linear(3, 2)

    def grid_size_for(self, h, w):
        return (1, 2)

    def forward(self, x):
        a = self.blocks[0].attn.attn_drop(self.a.expand(x.shape[0], 1, 3, 3))
        tokens = torch.cat([torch.zeros(x.shape[0], 1, 3), x.flatten(2).transpose(1, 2)], 1)  # B x 3 x 3
        return self.head((a[:, 0] @ tokens)[:, 0])


@pytest.mark.parametrize("ratio,want", [(0.0, [0.15, 0.1]), (0.5, [1 / 6, 0.0])])
def test_rollout_discard_ratio(ratio, want):
    # 0.5 of 9 entries -> the 4 smallest (0.1, 0.2, 0.2, 0.2) set to 0: row 0 = [.5, .3, 0];
    # 0.5 A + 0.5 I = [.75, .15, 0], renormalised -> patches [.15 / .9, 0]. Without discarding:
    # [.75, .15, .1] -> [.15, .1].
    res = compute_maps(OneLayer(), torch.randn(1, 3, 1, 2), [create_method("rollout", discard_ratio=ratio)])
    torch.testing.assert_close(res.maps["rollout"].maps[0], torch.tensor([want]))
    assert res.maps["rollout"].info["discard_ratio"] == ratio


def test_method_options_are_typed_and_checked():
    opts = parse_method_options(["gradcam.layer=blocks.10.norm1", "cls_attention.layer=-1", "cls_attention.head=3",
                                 "rollout.head_fusion=min", "rollout.discard_ratio=0.9"])
    assert opts == {"gradcam": {"layer": "blocks.10.norm1"}, "cls_attention": {"layer": -1, "head": 3},
                    "rollout": {"head_fusion": "min", "discard_ratio": 0.9}}
    with pytest.raises(UsageError, match=r"Valid options: rollout\.head_fusion, rollout\.discard_ratio"):
        parse_method_options(["rollout.fusion=max"])
    with pytest.raises(UsageError, match="choose one of mean, max, min"):
        parse_method_options(["rollout.head_fusion=avg"])
    with pytest.raises(UsageError, match=r"discard_ratio must be in \[0, 1\)"):
        parse_method_options(["rollout.discard_ratio=1.5"])
    with pytest.raises(UsageError, match="expected int"):
        parse_method_options(["cls_attention.head=first"])
    with pytest.raises(UsageError, match="Unknown method 'gradcm'"):
        parse_method_options(["gradcm.layer=x"])


def test_every_method_and_model_describes_itself():
    for name in list_methods():
        info = describe_method(name)
        assert info["summary"] and info["cost"] and isinstance(info["options"], dict)
    assert describe_method("rollout")["options"]["head_fusion"]["choices"] == ("mean", "max", "min")
    assert describe_method("gradcam")["needs"] == ["gradients of the target"]
    for name in list_models():
        assert describe_model(name)["summary"]


class _Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):
        y = self.ln_1(x)
        return x + self.attn(y, y, y, need_weights=False)[0]  # as OpenCLIP calls it: no probabilities


class FakeOpenClipTower(nn.Module):
    """OpenCLIP's VisionTransformer layout (class name + module): conv patches, a class embedding
    first, ``transformer.resblocks.N.{ln_1, attn}`` with ``nn.MultiheadAttention``."""

    def __init__(self, dim: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.patch_size = (4, 4)
        self.conv1 = nn.Conv2d(3, dim, 4, 4)
        self.class_embedding = nn.Parameter(torch.randn(dim))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList([_Block(dim), _Block(dim)])

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1)
        for blk in self.transformer.resblocks:
            x = blk(x)
        return x[:, 0]


FakeOpenClipTower.__name__ = "VisionTransformer"
FakeOpenClipTower.__module__ = "open_clip.transformer"


def test_multihead_attention_is_made_to_return_its_per_head_probabilities():
    model = FakeOpenClipTower().eval()
    x = torch.randn(2, 3, 8, 12)  # a 2 x 3 grid
    res = compute_maps(model, x, [create_method("cls_attention", layer=1)])
    assert res.target_kind == "cls-norm"  # headless: an embedding
    seen = []  # torch's own probabilities: the same module called with need_weights=True per head
    blk = model.transformer.resblocks[1]
    h = blk.ln_1.register_forward_hook(
        lambda m, a, o: seen.append(blk.attn(o, o, o, need_weights=True, average_attn_weights=False)[1]))
    with torch.no_grad():
        model(x)
    h.remove()
    want = seen[0][:, :, 0, 1:].reshape(2, 2, 2, 3)
    torch.testing.assert_close(res.maps["cls_attention"].extras["per_head"], want)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())  # all removed
