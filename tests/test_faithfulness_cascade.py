"""The model-parameter randomisation cascade re-draws every learnt parameter, top down, per block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from auditor.faithfulness.randomisation import cascade_layers, cascade_steps, randomised_models
from auditor.models import create_model

from conftest import tiny_vit

X32 = torch.zeros(1, 3, 32, 32)


class Block(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


class UserCNN(nn.Module):
    """A user's CNN: stem, stages of blocks (nested Sequentials), a learnt output temperature,
    children defined out of forward order (head first)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.stages = nn.Sequential(nn.Sequential(Block(4), Block(4)), nn.Sequential(Block(4)))
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x):
        x = self.stages(self.act(self.stem_bn(self.stem(x))))
        return self.head(x.mean((2, 3))) / self.temperature


def _trained_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm running statistics unlike their initial 0 / 1 (as a trained model has)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def _changed(model: nn.Module, original: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, original[n])}


def _models():
    from auditor.models.multi_attention import MultiAttentionViT

    mab = MultiAttentionViT(use_mab=True, use_drff=True, embed_dim=16, depth=2, num_heads=2, img_size=32,
                            patch_size=4, num_classes=3, window_size=4)
    return {"vit": tiny_vit(num_classes=3), "multi_attention": mab.eval(),
            "efficientnet_lite0": _trained_bn(create_model("efficientnet_lite0", num_classes=3)),
            "user_cnn": _trained_bn(UserCNN())}


ORDERS = {
    "vit": ["head", "norm", "blocks.1", "blocks.0", "cls_token,pos_embed", "patch_embed"],
    # forward: blocks -> drff -> norm -> head, though drff is defined last
    "multi_attention": ["head", "norm", "drff", "blocks.1", "blocks.0", "cls_token,pos_embed", "patch_embed"],
    "efficientnet_lite0": ["_fc", "_bn1", "_conv_head", *(f"_blocks.{i}" for i in range(15, -1, -1)), "_bn0",
                           "_conv_stem"],
    # the model's own parameter (temperature) is taken as input side: just before the first unit to run
    "user_cnn": ["head", "stages.1.0", "stages.0.1", "stages.0.0", "stem_bn", "temperature", "stem"],
}


@pytest.mark.parametrize("name", list(ORDERS))
def test_cascade_order_and_every_parameter_random_at_the_end(name):
    model = _models()[name]
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    steps = cascade_steps(model, X32)
    assert [s.name for s in steps] == ORDERS[name]
    owners = {s.name: {n for n in original
                       if n in s.params or any(n.startswith(m + ".") for m in s.modules)} for s in steps}
    done: set[str] = set()
    for step, rand in randomised_models(model, steps, seed=3):
        done |= owners[step]
        assert _changed(rand, original) == done, step  # exactly this step's parameters, and the earlier ones
    assert done == set(original)
    for n, p in rand.named_parameters():  # every element of every parameter is re-drawn
        assert not (p == original[n]).any(), n
    for n, b in rand.named_buffers():
        if n.endswith("running_mean"):
            assert torch.equal(b, torch.zeros_like(b)), n
        elif n.endswith("running_var"):
            assert torch.equal(b, torch.ones_like(b)), n
        elif n.endswith("num_batches_tracked"):
            assert int(b) == 0
        else:  # index tables: architecture, not learnt
            assert torch.equal(b, buffers[n]), n
    # the model itself is untouched
    assert _changed(model, original) == set()
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_randomisation_changes_cls_token_and_position_embedding():
    model = tiny_vit(num_classes=3)
    cls, pos = model.cls_token.detach().clone(), model.pos_embed.detach().clone()
    steps = cascade_steps(model, X32)
    seen = []
    for step, rand in randomised_models(model, steps):
        seen.append((step, torch.equal(rand.cls_token, cls), torch.equal(rand.pos_embed, pos)))
    assert seen[3] == ("blocks.0", True, True)  # untouched while the blocks are randomised
    assert seen[4] == ("cls_token,pos_embed", False, False)
    assert not (rand.cls_token == cls).any() and not (rand.pos_embed == pos).any()
    # timm's initialisation N(0, 0.02^2): the new values have about that spread
    assert 0.01 < float(rand.pos_embed.detach().std()) < 0.03


def test_norm_scales_stay_near_one_and_the_cascade_is_deterministic():
    model = tiny_vit(num_classes=3)
    steps = cascade_steps(model, X32)
    a = [{n: p.detach().clone() for n, p in r.named_parameters()} for _, r in randomised_models(model, steps, seed=5)]
    b = {n: p.detach().clone() for n, p in list(randomised_models(model, steps, seed=5))[-1][1].named_parameters()}
    assert all(torch.equal(a[-1][n], b[n]) for n in b)
    w = a[-1]["norm.weight"]
    assert not torch.equal(w, torch.ones_like(w)) and float((w - 1).abs().max()) < 0.1  # 1 + N(0, 0.02^2)
    c = {n: p for n, p in list(randomised_models(model, steps, seed=6))[-1][1].named_parameters()}
    assert not torch.equal(c["norm.weight"], b["norm.weight"])


def test_efficientnet_goes_per_mbconv_block():
    from auditor.models.efficientnet_lite import MBConv

    model = create_model("efficientnet_lite0", num_classes=3)
    names = cascade_layers(model, X32)
    blocks = [n for n in names if n.startswith("_blocks")]
    assert len(blocks) == 16 == sum(isinstance(m, MBConv) for m in model.modules())
    assert all(isinstance(model.get_submodule(n), MBConv) for n in blocks)
    assert model.training  # the order is read in eval mode and each module's mode restored


def test_cascade_flags_weight_independent_maps_with_every_step():
    """The cascade's similarity has one row per step, the ViT's embeddings included."""
    from auditor.faithfulness import randomisation_cascade
    from auditor.methods import compute_maps, create_method

    from conftest import colour_vit, red_square_images

    model = colour_vit()
    x, _ = red_square_images(4)
    res = compute_maps(model, x, [create_method("gradcam")], target=[0] * 4)
    out = randomisation_cascade(model, x, [create_method("gradcam")], {"gradcam": res.maps["gradcam"].maps},
                                res.targets)
    assert out["layers"] == ["head", "norm", "blocks.0", "cls_token,pos_embed", "patch_embed"]
    assert out["similarity"]["gradcam"]["spearman"].shape == (5, 4)
    assert np.nanmean(out["similarity"]["gradcam"]["spearman"][-1]) < 0.5
