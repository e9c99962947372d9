"""DRFF, the dual reconstruction feature fusion of the FewTURE fork (see :mod:`.multi_attention`).

Multi-scale depthwise convolutions (kernels 3, 5, 7, ...), fused by AFFM (softmax weights
over the scales), re-weighted by MS-CAM (multi-scale channel attention, Dai et al., WACV
2021), refined, and added back: ``x + refine(mscam(affm([dwconv_k(x)])))`` on ``[B, C, H, W]``.
Parameter names follow the reference (``scale_convs``, ``affm``, ``mscam``, ``refine``).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class AttentionFeatureFusion(nn.Module):
    """AFFM: softmax weights over the scales from the pooled concatenation, weighted concat, 1x1 fusion."""

    def __init__(self, dim: int, num_scales: int = 3):
        super().__init__()
        cat = dim * num_scales
        self.scale_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cat, cat, 1), nn.ReLU(),
                                             nn.Conv2d(cat, num_scales, 1), nn.Softmax(dim=1))
        self.fusion_conv = nn.Conv2d(cat, dim, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        weights = self.scale_attention(torch.cat(features, dim=1))  # [B, scales, 1, 1]
        return self.fusion_conv(torch.cat([f * weights[:, i:i + 1] for i, f in enumerate(features)], dim=1))


class MultiScaleChannelAttention(nn.Module):
    """MS-CAM: ``x * sigmoid(fusion([global(x) broadcast, local(x)]))``."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.global_branch = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, hidden, 1), nn.ReLU(),
                                           nn.Conv2d(hidden, dim, 1))
        self.local_branch = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1))
        self.fusion = nn.Sequential(nn.Conv2d(dim * 2, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fusion(torch.cat([self.global_branch(x).expand_as(x), self.local_branch(x)], dim=1))


class DualReconstructionFeatureFusion(nn.Module):
    """DRFF on ``[B, C, H, W]``: ``x + refine(mscam(affm([dwconv_k(x) for k = 3, 5, ...])))``."""

    def __init__(self, dim: int, num_scales: int = 3):
        super().__init__()
        self.scale_convs = nn.ModuleList(nn.Conv2d(dim, dim, 2 * i + 1, padding=i, groups=dim)
                                         for i in range(1, num_scales + 1))
        self.affm = AttentionFeatureFusion(dim, num_scales)
        self.mscam = MultiScaleChannelAttention(dim)
        self.refine = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(1, dim), nn.GELU(),
                                    nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.refine(self.mscam(self.affm([conv(x) for conv in self.scale_convs])))
