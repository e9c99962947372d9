"""Occlusion (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV
2014): slide a window over the image, replace it by a baseline, and credit the drop of the
target score to the pixels it covered.

Window ``(wh, ww)`` at positions ``k * stride`` (``ceil((H - wh) / stride) + 1`` per axis;
the last one cropped at the border), over all colour channels at once. With ``y`` the target
score of the image and ``y_w`` with window ``w`` set to ``baseline`` (a value in the
normalised input space; 0 = Captum's default): each pixel's attribution is the mean of
``y - y_w`` over the windows that cover it -- Captum 0.9's
``Occlusion(model).attribute(x, sliding_window_shapes=(3, wh, ww), strides=(3, s, s),
baselines=baseline, target=...)`` (equal on every channel; the map is that value ``B x H x W``,
signed, displayed and scored after a ReLU: ``relu_minmax``); ``extras["attributions"]`` is that
value on every channel ``[B, 3, H, W]``, Captum's shape.

Cost: ``1 + windows`` forwards per image (``windows = ceil((H - wh) / s + 1) * ceil((W - ww) / s + 1)``),
batched ``batch_size`` occluded images at a time (the memory bound). No backward.

Shapes: input ``B x 3 x H x W`` -> map ``B x H x W``.
"""

from __future__ import annotations

import math

import torch

from ..errors import NotApplicableError, UsageError
from .base import MapResult, Method, Recording
from .passes import OwnPasses, chunks
from .registry import register_method


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window positions along one axis, as Captum: ``k * stride`` for ``k <= ceil((size - window) / stride)``."""
    if window > size:
        raise NotApplicableError(f"occlusion: the window ({window} px) is larger than the image ({size} px)")
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


@register_method
class Occlusion(Method):
    name = "occlusion"
    normalization = "relu_minmax"  # signed: positive evidence for the target, as the CAMs
    in_default = False
    needs_own_passes = True
    cost = "1 + (number of windows) forwards per image, batched; no backward"

    def __init__(self, window: int | tuple[int, int] = 16, stride: int | tuple[int, int] = 8, baseline: float = 0.0,
                 batch_size: int = 32):
        self.window, self.stride, self.baseline, self.batch_size = window, stride, float(baseline), batch_size
        (wh, ww), (sh, sw) = _pair(window), _pair(stride)
        if min(wh, ww, sh, sw) < 1 or sh > wh or sw > ww:
            raise UsageError(f"occlusion: need 1 <= stride <= window, got window {window}, stride {stride}")

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        passes.check(self.name)
        x = passes.inputs
        b, (h, w) = x.shape[0], x.shape[-2:]
        (wh, ww), (sh, sw) = _pair(self.window), _pair(self.stride)
        boxes = [(i, j) for j in window_starts(w, ww, sw) for i in window_starts(h, wh, sh)]  # Captum: rows vary fastest
        original = passes.scores(x, torch.arange(b, device=x.device))
        n = len(boxes)
        rows, which = torch.arange(b * n) // n, torch.arange(b * n) % n
        drops = torch.empty(b * n, device=x.device)
        for lo, hi in chunks(b * n, self.batch_size):
            r = rows[lo:hi].to(x.device)
            occluded = x[r].clone()
            for k, wi in enumerate(which[lo:hi].tolist()):
                i, j = boxes[wi]
                occluded[k, :, i:i + wh, j:j + ww] = self.baseline
            drops[lo:hi] = original[r] - passes.scores(occluded, r)
        total = torch.zeros(b, h, w, device=x.device)
        count = torch.zeros(h, w, device=x.device)
        drops = drops.view(b, n)
        for wi, (i, j) in enumerate(boxes):
            total[:, i:i + wh, j:j + ww] += drops[:, wi, None, None]
            count[i:i + wh, j:j + ww] += 1
        maps = total / count
        return MapResult(self.name, maps, extras={"attributions": maps[:, None].expand(-1, x.shape[1], -1, -1)})
