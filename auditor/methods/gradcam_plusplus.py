"""Grad-CAM++ (Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual
Explanations for Deep Convolutional Networks", WACV 2018, arXiv:1710.11063, eq. 19).

With ``S_c = sum_{i,j} A_c[i, j]`` and the exponential-score closed form of the higher
derivatives (``G^2``, ``G^3``):
``alpha = G^2 / (2 G^2 + S_c G^3 + 1e-6)`` (0 where ``G == 0``),
``w_c = sum_{i,j} alpha * relu(G)`` and ``cam = sum_c w_c A_c``, raw before the ReLU.
Reference: pytorch-grad-cam 1.5.7 ``GradCAMPlusPlus.get_cam_weights`` (its ``eps = 1e-6``).

Cost: one forward + one backward per batch, shared with every other gradient method.

Shapes: activations, gradients ``B x C x h x w`` (ViT tokens reshaped) -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import CamMethod, weighted_sum
from .registry import register_method

EPS = 1e-6


@register_method
class GradCAMPlusPlus(CamMethod):
    name = "gradcam_plusplus"
    in_default = False  # asked for by name: --methods

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2 = grad ** 2
        sum_act = act.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_act * (g2 * grad) + EPS)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        return weighted_sum((grad.clamp(min=0) * alpha).sum(dim=(2, 3)), act)
