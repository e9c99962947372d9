"""HiResCAM (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
convolutional neural networks", 2020, arXiv:2011.08891).

``cam = sum_c G_c * A_c`` (element-wise, no spatial averaging of the gradients), raw before
the ReLU. Where the gradients are constant over space (a CNN's last feature map before global
average pooling) it equals Grad-CAM, since ``mean(G_c) = G_c`` there; ViT token layers and
inner CNN layers tell them apart.
Reference: pytorch-grad-cam 1.5.7 ``HiResCAM.get_cam_image``.

Cost: one forward + one backward per batch, shared with every other gradient method.

Shapes: activations, gradients ``B x C x h x w`` (ViT tokens reshaped) -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import CamMethod
from .registry import register_method


@register_method
class HiResCAM(CamMethod):
    name = "hirescam"
    in_default = False  # asked for by name: --methods

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return (grad * act).sum(1)
