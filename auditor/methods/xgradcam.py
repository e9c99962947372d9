"""XGrad-CAM (Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and
Explanation of CNNs", BMVC 2020, arXiv:2008.02312).

``w_c = sum_{i,j} G_c[i, j] A_c[i, j] / (sum_{i,j} A_c[i, j] + 1e-7)`` and
``cam = sum_c w_c A_c``, raw before the ReLU. Where the gradients are constant over space (a
CNN's last feature map before global average pooling) it equals Grad-CAM.
Reference: pytorch-grad-cam 1.5.7 ``XGradCAM.get_cam_weights`` (its ``eps = 1e-7``).

Cost: one forward + one backward per batch, shared with every other gradient method.

Shapes: activations, gradients ``B x C x h x w`` (ViT tokens reshaped) -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import CamMethod, weighted_sum
from .registry import register_method

EPS = 1e-7


@register_method
class XGradCAM(CamMethod):
    name = "xgradcam"
    in_default = False  # asked for by name: --methods

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        sum_act = act.sum(dim=(2, 3), keepdim=True)
        return weighted_sum((grad * act / (sum_act + EPS)).sum(dim=(2, 3)), act)
