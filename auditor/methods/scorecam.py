"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
Neural Networks", CVPR workshops 2020, arXiv:1910.01279).

Each channel ``A_c`` of the target layer, upsampled to the input size (bilinear,
``align_corners=True``, as pytorch-grad-cam's ``UpsamplingBilinear2d``) and min-max scaled
(``(u - min) / (max - min + 1e-8)``), masks the input; the target score ``s_c`` of each masked
image gives ``w = softmax_c(s)`` and ``cam = sum_c w_c A_c``, raw before the ReLU.
Reference: pytorch-grad-cam 1.5.7 ``ScoreCAM.get_cam_weights``.

Cost: the shared forward, then ``C`` forwards per image (``C``: the layer's channels, e.g. 384
for ViT-S), batched ``batch_size`` masked images at a time (the memory bound). No backward.

Shapes: input ``B x 3 x H x W``, activations ``B x C x h x w`` (ViT tokens reshaped) -> ``B x h x w``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import MapResult, Recording
from .cam_base import ChannelPassesCam, weighted_sum
from .passes import OwnPasses
from .registry import register_method


@register_method
class ScoreCAM(ChannelPassesCam):
    name = "scorecam"

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        passes.check(self.name)
        act, _, layer_name = self.layer_tensors(rec)
        x = passes.inputs
        b, c = x.shape[0], act.shape[1]
        act = act[:b].to(x.device)
        scores = torch.empty(b * c, device=x.device)
        for lo, hi, r, ch in self.channel_pairs(b, c):
            up = F.interpolate(act[r, ch][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True)
            lo_v, hi_v = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            mask = (up - lo_v) / (hi_v - lo_v + 1e-8)
            scores[lo:hi] = passes.scores(x[r] * mask, r)
        weights = torch.softmax(scores.view(b, c), dim=-1)
        return MapResult(self.name, weighted_sum(weights, act), info={"layer": layer_name})
