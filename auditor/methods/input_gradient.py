"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional
Networks", ICLR workshop 2014): ``|d score / d x|``, max over colour channels.

This is what scripts often call "Grad-CAM" without a target layer; here it has its own
name. The map is at input resolution; the gradient comes from the pass's single
``autograd.grad`` call (``needs_input_gradient``).

Cost: one forward + one backward (to the input) per batch, shared with every other gradient method.

Shapes: input ``B x 3 x H x W`` -> map ``B x H x W``.
"""

from __future__ import annotations

import torch

from .base import MapResult, Method, Recording
from .registry import register_method


@register_method
class InputGradient(Method):
    name = "input_gradient"
    needs_input_gradient = True
    cost = "1 forward + 1 backward to the input per batch, shared with every other gradient method"

    def compute(self, rec: Recording) -> MapResult:
        grad = rec.input_gradient
        if grad is None:  # the target does not depend on the input: an all-zero map
            grad = torch.zeros_like(rec.inputs)
        return MapResult(self.name, grad.detach().float().abs().amax(1))
