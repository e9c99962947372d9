"""Methods: hand-computed attention read-outs, Grad-CAM localisation, one pass, hook hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from auditor.errors import NotApplicableError, UsageError
from auditor.maps import upsample
from auditor.methods import compute_maps, create_method, list_methods, method_class

from conftest import colour_vit, red_square_images, tiny_vit


class FixedAttention(nn.Module):
    """A block whose attention is a given matrix, passed through an ``attn_drop`` hook point."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.attn_drop = nn.Identity()

    def forward(self, x):
        a = self.attn_drop(self.matrix.expand(x.shape[0], 1, -1, -1))
        return a[:, 0] @ x


class Block(nn.Module):
    def __init__(self, matrix):
        super().__init__()
        self.attn = FixedAttention(matrix)

    def forward(self, x):
        return self.attn(x)


class HandBuilt(nn.Module):
    """Two layers, one head, 1 CLS + a 2x2 grid of tokens, attention fixed by hand:
    layer 1 uniform (every entry 1/5), layer 2 every query attends to token 1 only."""

    num_prefix_tokens = 1
    num_classes = 2

    def __init__(self):
        super().__init__()
        a1 = torch.full((5, 5), 0.2)
        a2 = torch.zeros(5, 5)
        a2[:, 1] = 1.0
        self.blocks = nn.ModuleList([Block(a1), Block(a2)])
        self.head = nn.Linear(3, 2)

    def grid_size_for(self, h, w):
        return (2, 2)

    def forward(self, x):
        tokens = torch.cat([torch.zeros(x.shape[0], 1, 3), x.flatten(2).transpose(1, 2)], 1)  # x: B x 3 x 2 x 2
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.head(tokens[:, 0])


def test_cls_attention_of_a_hand_built_model():
    res = compute_maps(HandBuilt(), torch.randn(1, 3, 2, 2), [create_method("cls_attention", layer=0),
                                                             create_method("rollout")])
    # layer 0: the CLS row is uniform, 1/5 on each patch
    torch.testing.assert_close(res.maps["cls_attention"].maps[0], torch.full((2, 2), 0.2))
    per_layer = res.maps["cls_attention"].extras["per_layer"][0]
    # layer 1: the CLS row puts all its weight on token 1 = patch (0, 0)
    torch.testing.assert_close(per_layer[1], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_rollout_of_a_hand_built_model():
    # Â1 = 0.5 U + 0.5 I: row 0 = [.6, .1, .1, .1, .1], row 1 = [.1, .6, .1, .1, .1]
    # Â2 = 0.5 E1 + 0.5 I: row 0 = [.5, .5, 0, 0, 0]
    # (Â2 Â1) row 0 = .5 * [.6, .1, .1, .1, .1] + .5 * [.1, .6, .1, .1, .1] = [.35, .35, .1, .1, .1]
    res = compute_maps(HandBuilt(), torch.randn(1, 3, 2, 2), [create_method("rollout")])
    torch.testing.assert_close(res.maps["rollout"].maps[0], torch.tensor([[0.35, 0.1], [0.1, 0.1]]))


class QuadrantCNN(nn.Module):
    """Features copy the image's brightness; logit k sums the features in quadrant k.

    The evidence for class k is, by construction, the bright pixels of quadrant k."""

    num_classes = 4

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[0] = 1.0 / 3
            self.features[0].weight[1, 0] = 0.01
            self.features[0].bias.zero_()

    def forward(self, x):
        f = self.features(x)[:, 0]
        h, w = f.shape[-2] // 2, f.shape[-1] // 2
        quads = [f[:, :h, :w], f[:, :h, w:], f[:, h:, :w], f[:, h:, w:]]
        return torch.stack([q.sum((1, 2)) for q in quads], 1)


def test_gradcam_on_a_cnn_peaks_in_the_deciding_quadrant():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 0.2
    quadrant = torch.arange(8) % 4
    for i, q in enumerate(quadrant.tolist()):
        r, c = (q // 2) * 8 + 2, (q % 2) * 8 + 3
        x[i, :, r:r + 3, c:c + 3] = 1.0
    res = compute_maps(QuadrantCNN(), x, [create_method("gradcam")])
    assert res.targets == quadrant.tolist()  # the prediction is the bright quadrant
    assert res.maps["gradcam"].info["layer"] == "features"  # the last feature map, found in the pass
    cams = res.maps["gradcam"].maps
    for i, q in enumerate(quadrant.tolist()):
        r, c = divmod(int(cams[i].argmax()), 16)
        assert (r // 8) * 2 + c // 8 == q


def test_gradcam_on_a_vit_peaks_on_the_evidence():
    x, corners = red_square_images(40, seed=3)
    res = compute_maps(colour_vit(), x, [create_method("gradcam")], target=[0] * 40)  # class 0 = red
    assert res.maps["gradcam"].info["layer"] == "blocks.0.norm1"
    up = upsample(res.maps["gradcam"].maps, (32, 32))
    for cam, (r0, c0) in zip(up, corners):
        r, c = divmod(int(np.argmax(cam)), 32)
        assert r0 <= r < r0 + 8 and c0 <= c < c0 + 8


def test_gradcam_is_raw_and_signed():
    x, _ = red_square_images(4, seed=1)
    cam = compute_maps(colour_vit(), x, [create_method("gradcam")], target=[1] * 4).maps["gradcam"].maps
    assert (cam < 0).any()  # green is absent: negative evidence is kept, not clipped


def _count_calls(model):
    counts = {"forward": 0, "backward": 0}
    model.register_forward_hook(lambda *a: counts.__setitem__("forward", counts["forward"] + 1))
    # fires once per backward pass that starts from the output (the gradient reaches the head first)
    model.head.register_full_backward_pre_hook(lambda *a: counts.__setitem__("backward", counts["backward"] + 1))
    return counts


def test_all_methods_share_one_forward_and_one_backward_per_batch():
    model = tiny_vit(num_classes=3)
    counts = _count_calls(model)
    one_pass = [n for n in list_methods() if not method_class(n).needs_own_passes]  # (those: test_performance_plan)
    res = compute_maps(model, torch.randn(6, 3, 32, 32), [create_method(n) for n in one_pass])
    # the multi-attention methods (tests/test_multi_attention.py) need MAB blocks or support images
    assert sorted(res.skipped) == ["channel_attention", "ocab_attention", "reconstruction_attention",
                                   "window_attention"]
    assert sorted(res.maps) == sorted(set(one_pass) - set(res.skipped))
    assert counts == {"forward": 1, "backward": 1}
    assert all(r.maps.shape == (6, 4, 4) for n, r in res.maps.items() if n != "input_gradient")
    assert res.maps["input_gradient"].maps.shape == (6, 32, 32)  # at input resolution
    assert all(p.grad is None for p in model.parameters())  # autograd.grad leaves .grad alone


def test_attention_only_methods_run_without_a_backward():
    model = tiny_vit(num_classes=3)
    counts = _count_calls(model)
    compute_maps(model, torch.randn(2, 3, 32, 32), [create_method("cls_attention"), create_method("rollout")])
    assert counts == {"forward": 1, "backward": 0}


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_vit(num_classes=3)

    def forward(self, x):
        self.inner.blocks[0](self.inner._pos_embed(self.inner.patch_embed(x), (4, 4)))
        raise RuntimeError("boom")


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_when_the_model_raises():
    model = Exploding()
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        compute_maps(model, torch.randn(1, 3, 32, 32), [create_method(n) for n in list_methods()], target=[0])
    assert _hook_count(model) == 0


def test_cnn_reports_attention_methods_not_applicable():
    res = compute_maps(QuadrantCNN(), torch.rand(1, 3, 8, 8), [create_method(n) for n in list_methods()])
    assert "gradcam" in res.maps
    assert "no readable attention" in res.skipped["cls_attention"] and "rollout" in res.skipped


def test_headless_backbone_explains_the_cls_norm():
    res = compute_maps(tiny_vit(), torch.randn(2, 3, 32, 32), [create_method("gradcam")])
    assert res.target_kind == "cls-norm" and res.targets == [None, None]
    with pytest.raises(UsageError, match="no class head"):
        compute_maps(tiny_vit(), torch.randn(1, 3, 32, 32), [create_method("gradcam")], target=[0])


def test_bad_targets_and_layers():
    with pytest.raises(UsageError, match="out of range"):
        compute_maps(tiny_vit(num_classes=3), torch.randn(1, 3, 32, 32), [create_method("gradcam")], target=[5])
    res = compute_maps(tiny_vit(num_classes=3), torch.randn(1, 3, 32, 32), [create_method("cls_attention", layer=9)])
    assert "layer 9 does not exist" in res.skipped["cls_attention"]
    with pytest.raises(NotApplicableError, match="no layer named 'blocks.9'"):
        compute_maps(tiny_vit(num_classes=3), torch.randn(1, 3, 32, 32), [create_method("gradcam", layer="blocks.9")])
    with pytest.raises(UsageError, match="Unknown method 'gradcam\\+\\+'.*gradcam"):
        create_method("gradcam++")


def test_cls_attention_head_selection():
    model = tiny_vit(num_classes=3)
    x = torch.randn(1, 3, 32, 32)
    res = compute_maps(model, x, [create_method("cls_attention", head=1)])
    per_head = res.maps["cls_attention"].extras["per_head"]
    torch.testing.assert_close(res.maps["cls_attention"].maps, per_head[:, 1])


class Wrapped(nn.Module):
    """A user's wrapper around a ViT (e.g. a backbone inside a classifier)."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.inner = colour_vit()

    def forward(self, x):
        return self.inner(x)


def test_gradcam_finds_the_vit_layer_inside_a_wrapper():
    x, corners = red_square_images(6, seed=5)
    res = compute_maps(Wrapped(), x, [create_method("gradcam")], target=[0] * 6)
    assert res.maps["gradcam"].info["layer"] == "inner.blocks.0.norm1"
    up = upsample(res.maps["gradcam"].maps, (32, 32))
    for cam, (r0, c0) in zip(up, corners):
        r, c = divmod(int(np.argmax(cam)), 32)
        assert r0 <= r < r0 + 8 and c0 <= c < c0 + 8
