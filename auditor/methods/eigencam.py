"""Eigen-CAM (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN 2020, arXiv:2008.00299).

The target layer's activations projected on their first principal component: the ``h * w``
positions' ``C``-vectors are centred and projected on the first right-singular vector
(:func:`~.cam_base.first_component`). No gradients, no target: the map is class-agnostic.
The SVD's sign is arbitrary and NOT fixed (as in pytorch-grad-cam 1.5.7's
``get_2d_projection``), so the map may come out negated: its ``relu_minmax`` display then
shows the complement.

Cost: one forward per batch, shared with every other method (no backward).

Shapes: activations ``B x C x h x w`` (ViT tokens reshaped) -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import SHARED_FORWARD, CamMethod, first_component
from .registry import register_method


@register_method
class EigenCAM(CamMethod):
    name = "eigencam"
    in_default = False  # asked for by name: --methods
    needs_gradients = False
    cost = SHARED_FORWARD

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return first_component(act)
