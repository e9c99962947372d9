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
map ``B x C x h x w`` with ``h * w > 1`` (e.g. ResNet's ``layer4``).

Shapes: activations ``B x C x h x w``, ``B x T x C`` or (NHWC adapters) ``B x h x w x C`` -> map ``B x h x w``.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import AUTO_FEATURE_MAP, MapResult, Method, Recording, token_grid
from .registry import register_method


@register_method
class GradCAM(Method):
    name = "gradcam"
    normalization = "relu_minmax"  # the paper's ReLU: only positive evidence
    needs_gradients = True

    def __init__(self, layer: str | None = None):
        self.layer = layer
        self._resolved: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict:  # picklable (Ray actors): the per-model cache is rebuilt on use
        return {**self.__dict__, "_resolved": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _resolved=weakref.WeakKeyDictionary())

    def activation_layers(self, model: nn.Module) -> list[str]:
        name = self.layer or self._resolved.get(model) or adapter_for(model).gradcam_layer()
        return [name or AUTO_FEATURE_MAP]

    def compute(self, rec: Recording) -> MapResult:
        key = self.activation_layers(rec.model)[0]
        act, grad = rec.activations.get(key), rec.gradients.get(key)
        if act is None:
            raise NotApplicableError("gradcam: no feature map (B x C x h x w or B x T x C) was recorded; pass a layer name")
        layer_name = rec.resolved_layers.get(key, key)
        if key == AUTO_FEATURE_MAP:
            self._resolved[rec.model] = layer_name
        if grad is None:
            grad = torch.zeros_like(act)  # the target does not depend on this layer: an all-zero map
        act, grad = act.detach().float(), grad.detach().float()
        if act.ndim == 4 and adapter_for(rec.model).gradcam_layout == "nhwc" and not isinstance(
                dict(rec.model.named_modules()).get(key), nn.Conv2d):  # B x h x w x C -> B x C x h x w (a conv: NCHW)
            act, grad = act.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
        if act.ndim == 3:  # tokens B x T x C -> B x C x h x w
            grid, prefix = token_grid(rec.model, rec.inputs, act.shape[1])
            act, grad = (t[:, prefix:].transpose(1, 2).reshape(t.shape[0], -1, *grid) for t in (act, grad))
        if act.ndim != 4:
            raise NotApplicableError(f"gradcam: layer '{layer_name}' gives {tuple(act.shape)}, not a feature map")
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = (weights * act).sum(1)
        return MapResult(self.name, cam, info={"layer": layer_name})
