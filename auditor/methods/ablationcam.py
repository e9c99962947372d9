"""Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
Network via Gradient-free Localization", WACV 2020).

Each channel ``c`` of the target layer is ablated in turn (the layer's output replaced, the
rest of the forward run again); with the target score ``y`` and ``y_c`` after ablating ``c``:
``w_c = (y - y_c) / y`` and ``cam = sum_c w_c A_c``, raw before the ReLU.

The ablation value follows pytorch-grad-cam 1.5.7 (``AblationLayer`` / ``AblationLayerVit``,
``AblationCAM(batch_size=32)``) so that the maps are equal: 0 when the image's activations
have minimum 0 (after a ReLU); otherwise a very negative value, which that code lowers by
another ``1e7`` for each channel within its blocks of 32 channels (``min - 1e7``,
``min - 2e7``, ..., in float32). ViT tokens are ablated on every token, the class token
included, as there.

Cost: the shared forward, then ``C`` forwards per image (``C``: the layer's channels),
batched ``batch_size`` ablated copies at a time (the memory bound). No backward.

Shapes: activations ``B x C x h x w`` or tokens ``B x T x C`` -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .base import MapResult, Recording
from .cam_base import ChannelPassesCam, weighted_sum
from .passes import OwnPasses
from .registry import register_method

ABLATION_STEP = 1e7
REFERENCE_BLOCK = 32  # pytorch-grad-cam's AblationCAM batch_size: its ablation value restarts every block


def ablation_values(activation: torch.Tensor, channels: int) -> torch.Tensor:
    """Value written into each ablated channel ``[C]`` for one image's activation (see module doc)."""
    low = activation.min().float()
    if low == 0:
        return torch.zeros(channels)
    values, v = [], low
    for c in range(min(channels, REFERENCE_BLOCK)):
        v = v - ABLATION_STEP  # float32, one step at a time, as the reference accumulates it
        values.append(v)
    block = torch.stack(values)
    return block.repeat((channels + REFERENCE_BLOCK - 1) // REFERENCE_BLOCK)[:channels]


@register_method
class AblationCAM(ChannelPassesCam):
    name = "ablationcam"

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        passes.check(self.name)
        act, _, layer_name = self.layer_tensors(rec)
        x = passes.inputs
        b, c = x.shape[0], act.shape[1]
        raw = self.recorded(rec)[0][:b].detach().to(x.device)
        tokens = raw.ndim == 3  # B x T x C: channels last
        values = torch.stack([ablation_values(raw[i], c) for i in range(b)]).to(raw.device, raw.dtype)
        ablated = torch.empty(b * c, device=x.device)
        for lo, hi, r, ch in self.channel_pairs(b, c):
            out = raw[r].clone()
            k = torch.arange(hi - lo)
            if tokens:
                out[k, :, ch] = values[r, ch][:, None]
            else:
                out[k, ch] = values[r, ch][:, None, None]
            ablated[lo:hi] = passes.scores(x[r], r, replace=(layer_name, lambda _, out=out: out))
        original = rec.target_scores[:b].detach().float().to(x.device)[:, None]
        weights = (original - ablated.view(b, c)) / original
        return MapResult(self.name, weighted_sum(weights, act[:b].to(x.device)), info={"layer": layer_name})
