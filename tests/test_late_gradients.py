"""The shared pass records autograd only from the first layer whose gradient is asked for.

A last-block Grad-CAM needs no graph of the blocks before it: the pass runs them without
gradients and switches autograd on in the layer's forward hook. The maps must be the ones of
a pass recorded from the input, bit for bit; the blocks before the layer keep no graph.
"""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
import torch.nn as nn

import auditor.methods.engine as engine
from auditor.methods import compute_maps, create_method

from conftest import tiny_vit


def _both(model, x, names, **kw):
    """Maps of the late-gradient pass and of a pass recorded from the input."""
    methods = [create_method(n, **kw) for n in names]
    late = compute_maps(model, x, methods, target="predicted")
    real = engine._late_gradient_layers
    engine._late_gradient_layers = lambda *a, **k: set()
    try:
        whole = compute_maps(model, x, methods, target="predicted")
    finally:
        engine._late_gradient_layers = real
    return late, whole


def _assert_same(late, whole):
    assert late.maps.keys() == whole.maps.keys() and late.maps
    for name in late.maps:
        assert torch.equal(late.maps[name].maps, whole.maps[name].maps), name


def test_vit_maps_equal_a_pass_recorded_from_the_input():
    model = tiny_vit(num_classes=5)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _assert_same(*_both(model, x, ["gradcam", "gradcam_plusplus", "layercam", "eigengradcam", "rollout",
                                   "cls_attention"]))


def test_blocks_before_the_layer_keep_no_graph():
    model = tiny_vit(num_classes=5)
    seen: dict[str, bool] = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(f"block{i}", out.requires_grad))
    x = torch.randn(2, 3, 32, 32)
    compute_maps(model, x, [create_method("gradcam")], target="predicted")  # layer: the last block's norm1
    assert seen == {"block0": False, "block1": True}
    compute_maps(model, x, [create_method("gradcam"), create_method("input_gradient")], target="predicted")
    assert seen == {"block0": True, "block1": True}  # a gradient to the input: recorded from the input


class _Pair(nn.Module):
    """A layer whose output is a tuple (or a named tuple): the map's tensor is its first item."""

    def __init__(self, named: bool):
        super().__init__()
        self.conv, self.named = nn.Conv2d(4, 6, 3, padding=1), named

    def forward(self, x):
        y = self.conv(x)
        return namedtuple("Out", "features mean")(y, y.mean()) if self.named else (y, y.mean())


class _Net(nn.Module):
    """conv -> a tuple-returning layer -> in-place ReLU on its output -> pool -> head."""

    def __init__(self, named: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.pair = nn.Conv2d(3, 4, 3, padding=1), _Pair(named)
        self.relu, self.head = nn.ReLU(inplace=True), nn.Linear(6, 3)

    def forward(self, x):
        y = self.relu(self.pair(self.stem(x))[0])  # in place on the recorded activation, as ResNets do
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("named", [False, True])
def test_a_tuple_output_and_an_in_place_op_after_the_layer_give_the_same_maps(named):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    _assert_same(*_both(_Net(named), x, ["gradcam", "layercam"], layer="pair"))


def test_a_layer_on_no_way_to_the_scores_behaves_as_before():
    """The head reads the stem, never the named layer: no gradient reaches it, in either pass."""

    class Bypass(_Net):
        def forward(self, x):
            s = self.stem(x)
            self.pair(s)
            return self.head(torch.cat([s, s[:, :2]], 1).mean((2, 3)))

    late, whole = _both(Bypass(), torch.randn(1, 3, 8, 8), ["gradcam"], layer="pair")
    _assert_same(late, whole)
    assert not late.maps["gradcam"].maps.any()  # no evidence: a flat map, reported as such downstream
