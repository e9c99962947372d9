"""Eigen-Grad-CAM (pytorch-grad-cam's variant of Eigen-CAM, Muhammad & Yeasin, IJCNN 2020):
the first principal component of the gradient-weighted activations ``G * A``
(:func:`~.cam_base.first_component`), class-discriminative unlike Eigen-CAM. The SVD's sign
is NOT fixed (as in pytorch-grad-cam 1.5.7's ``EigenGradCAM``).

Cost: one forward + one backward per batch, shared with every other gradient method.

Shapes: activations, gradients ``B x C x h x w`` (ViT tokens reshaped) -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import CamMethod, first_component
from .registry import register_method


@register_method
class EigenGradCAM(CamMethod):
    name = "eigengradcam"
    in_default = False  # asked for by name: --methods

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return first_component(grad * act)
