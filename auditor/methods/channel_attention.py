"""Channel attention: the CAB blocks inside MAB blocks and DRFF's MS-CAM, as the forward weighted them.

* A **CAB** (SE-style, Hu et al., CVPR 2018) computes per-image channel weights ``w =
  sigmoid(fc2(relu(fc1(avgpool x))) + fc2(relu(fc1(maxpool x))))`` ``[B, C, 1, 1]`` (read
  from its ``sigmoid``) and rescales its input ``x`` ``[B, C, h, w]`` by them.
* **MS-CAM** (multi-scale channel attention, Dai et al., "Attentional feature fusion",
  WACV 2021), inside the DRFF after the encoder, computes weights per channel *and* token,
  ``w = sigmoid(fusion([global(x), local(x)]))`` ``[B, C, h, w]`` (read from the output of
  its ``fusion``), and returns ``x * w``.

The map of either is the channel-weighted input averaged over channels, ``mean_c w_c x_c``:
where the re-weighted features are strong. Layers are taken in forward order (every CAB,
then the MS-CAM); the default is the last one, the MS-CAM when the model has a DRFF.

Shapes: map ``B x h x w`` (chosen layer), ``channel_weights`` ``B x L x C`` (each layer's
weights; MS-CAM's averaged over tokens), ``per_layer`` ``B x L x h x w``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import MapResult, Method, Recording
from .registry import register_method


def cab_modules(model: nn.Module) -> list[str]:
    """Names of the channel attention layers in forward order: CABs, then DRFF's MS-CAM (the model's adapter)."""
    return adapter_for(model).channel_blocks()


def _weights_module(model: nn.Module, name: str) -> str:
    return adapter_for(model).channel_weights(name)


@register_method
class ChannelAttentionMap(Method):
    name = "channel_attention"

    def __init__(self, block: int = -1):
        self.block = block

    def check(self, model: nn.Module) -> None:
        if not cab_modules(model):
            raise NotApplicableError("the model has no channel attention (CAB or DRFF's MS-CAM)")

    def captured_layers(self, model: nn.Module) -> list[str]:
        names = cab_modules(model)
        return names + [_weights_module(model, n) for n in names]

    def compute(self, rec: Recording) -> MapResult:
        names = cab_modules(rec.model)
        if not -len(names) <= self.block < len(names):
            raise NotApplicableError(f"block {self.block} does not exist: the model has {len(names)} channel "
                                     f"attention layers")
        weights = [rec.captured[_weights_module(rec.model, n)].detach().float() for n in names]  # [B, C, 1|h, 1|w]
        spatial = torch.stack([(rec.captured_inputs[n].detach().float() * w).mean(1) for n, w in zip(names, weights)],
                              dim=1)
        chosen = self.block % len(names)
        return MapResult(self.name, spatial[:, chosen],
                         extras={"channel_weights": torch.stack([w.mean((2, 3)) for w in weights], dim=1),
                                 "per_layer": spatial},
                         info={"layer": names[chosen]})
