"""LayerCAM (Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE TIP 2021).

``cam = sum_c relu(G_c) * A_c`` (element-wise), raw before the final ReLU.
Reference: pytorch-grad-cam 1.5.7 ``LayerCAM.get_cam_image``.

Cost: one forward + one backward per batch, shared with every other gradient method.

Shapes: activations, gradients ``B x C x h x w`` (ViT tokens reshaped) -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import CamMethod
from .registry import register_method


@register_method
class LayerCAM(CamMethod):
    name = "layercam"
    in_default = False  # asked for by name: --methods

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return (grad.clamp(min=0) * act).sum(1)
