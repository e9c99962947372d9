"""Channel attention of the CAB blocks (SE-style, Hu et al., CVPR 2018) inside MAB blocks.

A CAB computes per-image channel weights ``w = sigmoid(fc2(relu(fc1(avgpool x))) +
fc2(relu(fc1(maxpool x))))`` (read from its ``sigmoid`` during the pass) and rescales its
input ``x`` ``[B, C, h, w]`` by them. The map is that channel-weighted input averaged over
channels, ``mean_c w_c x_c``: where the re-weighted features are strong.

Shapes: map ``B x h x w`` (chosen block, default the last), ``channel_weights``
``B x L x C`` (every CAB), ``per_layer`` ``B x L x h x w``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import MapResult, Method, Recording
from .registry import register_method


def cab_modules(model: nn.Module) -> list[str]:
    return adapter_for(model).channel_blocks()


@register_method
class ChannelAttentionMap(Method):
    name = "channel_attention"

    def __init__(self, block: int = -1):
        self.block = block

    def check(self, model: nn.Module) -> None:
        if not cab_modules(model):
            raise NotApplicableError("the model has no channel attention (CAB) blocks")

    def captured_layers(self, model: nn.Module) -> list[str]:
        names = cab_modules(model)
        return names + [f"{n}.sigmoid" for n in names]

    def compute(self, rec: Recording) -> MapResult:
        names = cab_modules(rec.model)
        if not -len(names) <= self.block < len(names):
            raise NotApplicableError(f"block {self.block} does not exist: the model has {len(names)} CAB blocks")
        weights = torch.stack([rec.captured[f"{n}.sigmoid"].detach().float()[:, :, 0, 0] for n in names], dim=1)
        spatial = torch.stack([(rec.captured_inputs[n].detach().float() * weights[:, i, :, None, None]).mean(1)
                               for i, n in enumerate(names)], dim=1)
        chosen = self.block % len(names)
        return MapResult(self.name, spatial[:, chosen], extras={"channel_weights": weights, "per_layer": spatial},
                         info={"layer": names[chosen]})
