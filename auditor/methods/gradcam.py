"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017), for CNNs and ViTs.

With activations ``A`` of the target layer and gradients ``G = d score / d A``:
``w_c = mean_{i,j} G_c[i, j]`` and ``cam = sum_c w_c A_c`` -- returned *raw*, before the
paper's ReLU (applied with normalisation, :func:`auditor.maps.normalize` ``"relu_minmax"``).

Target layer (overridable with ``layer=``): the model adapter's
(:mod:`auditor.models.adapters`) -- for ViTs the last block's ``norm1`` (tokens ``B x T x C``,
prefix tokens (CLS, distillation, registers) dropped, patches reshaped to the grid, as
pytorch-grad-cam recommends); for timm Swin the last block's ``norm1`` (``B x H x W x C``,
NHWC); for any other model the last module, in execution order, whose output is a feature
map ``B x C x h x w`` with ``h * w > 1`` (e.g. ResNet's ``layer4``). The layer lookup and
reshaping live in :class:`~.cam_base.CamMethod`, shared by the CAM family.

Cost: one forward + one backward per batch, shared with every other gradient method.

Shapes: activations ``B x C x h x w``, ``B x T x C`` or (NHWC adapters) ``B x h x w x C`` -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .cam_base import CamMethod, weighted_sum
from .registry import register_method


@register_method
class GradCAM(CamMethod):
    name = "gradcam"

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return weighted_sum(grad.mean(dim=(2, 3)), act)
