"""Vision Transformer (Dosovitskiy et al., ICLR 2021) in the timm / DINO parameter layout.

Parameter names (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.norm1``,
``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.norm2``, ``blocks.N.mlp.fc1/fc2``,
``norm``, ``head``) and the forward computation follow timm's ``VisionTransformer`` and
DINO's ``vision_transformer.py``, so their checkpoints load with no key mapping.

Attention is computed explicitly (never a fused kernel): the post-softmax probabilities
``[B, heads, T, T]`` pass through ``blocks.N.attn.attn_drop``, where a forward hook reads
them (the same place in timm's non-fused path and in DINO).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..images import IMAGENET_MEAN, IMAGENET_STD
from ._registry import register_model


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int] | None = None,
                       num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubic resampling of absolute position embeddings ``[1, P + h*w, C]`` to a new grid.

    ``old_grid`` defaults to the square grid implied by the token count (as timm assumes).
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(f"cannot infer the grid of {grid.shape[1]} position embeddings (not square)")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    c = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    """Image ``[B, 3, H, W]`` -> patch tokens ``[B, h*w, C]`` with ``h = H // p``."""

    def __init__(self, img_size: tuple[int, int], patch_size: tuple[int, int], in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)  # hook point: receives the post-softmax probabilities
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a CLS token; ``num_classes=0`` gives a headless backbone (DINO / iBOT / FewTURE).

    ``forward(x)`` returns logits ``[B, num_classes]`` or, headless, the normalised CLS
    token ``[B, C]``. ``forward_features(x)`` returns all tokens after the final norm,
    ``[B, 1 + h*w, C]``. Inputs whose size differs from ``img_size`` get bicubically
    resampled position embeddings; both sides must be multiples of the patch size.
    """

    num_prefix_tokens = 1

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, num_classes: int = 0, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        img_size, patch_size = _pair(img_size), _pair(patch_size)
        if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
            raise ValueError(f"image_size {img_size} is not a multiple of patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {"input_size": (in_chans, *img_size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def grid_size_for(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` for an input of ``height x width`` pixels."""
        ph, pw = self.patch_embed.patch_size
        if height % ph or width % pw:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {ph}x{pw}")
        return height // ph, width // pw

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        pos = resample_pos_embed(self.pos_embed, grid, self.patch_embed.grid_size)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + pos)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid_size_for(x.shape[-2], x.shape[-1])
        x = self._pos_embed(self.patch_embed(x), grid)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def checkpoint_filter(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapt a checkpoint to this model: resample ``pos_embed`` to this grid."""
        pe = state_dict.get("pos_embed")
        if pe is not None and pe.ndim == 3 and pe.shape[1] != self.pos_embed.shape[1]:
            try:
                state_dict = dict(state_dict, pos_embed=resample_pos_embed(pe, self.patch_embed.grid_size))
            except ValueError:
                pass  # leave it: the shape check reports the mismatch
        return state_dict


def _create_vit(width: int, layers: int, heads: int, /, *, patch_size: int = 16,
                image_size: int | tuple[int, int] = 224, num_classes: int = 0, **kwargs: Any) -> VisionTransformer:
    """Build a ViT; ``embed_dim`` / ``depth`` / ``num_heads`` in ``kwargs`` override the size.

    ``use_mab`` / ``use_ocab`` / ``use_drff`` (with ``window_size``, ``drff_num_scales``) build the
    FewTURE fork's multi-attention backbone (:mod:`.multi_attention`); with no flag set, the plain ViT.
    """
    from .multi_attention import FLAGS, MULTI_ATTENTION_KWARGS, MultiAttentionViT

    cfg = {"embed_dim": width, "depth": layers, "num_heads": heads}
    cfg.update({k: v for k, v in kwargs.items() if v is not None})
    flags = {k: cfg.pop(k) for k in MULTI_ATTENTION_KWARGS if k in cfg}
    cls = MultiAttentionViT if any(flags.get(k) for k in FLAGS) else VisionTransformer
    cfg.update(flags if cls is MultiAttentionViT else {})
    return cls(img_size=image_size, patch_size=patch_size, num_classes=num_classes, **cfg)


@register_model
def vit_tiny(**kwargs: Any) -> VisionTransformer:
    """ViT-Tiny: width 192, depth 12, 3 heads."""
    return _create_vit(192, 12, 3, **kwargs)


@register_model
def vit_small(**kwargs: Any) -> VisionTransformer:
    """ViT-Small: width 384, depth 12, 6 heads (DINO ViT-S)."""
    return _create_vit(384, 12, 6, **kwargs)


@register_model
def vit_base(**kwargs: Any) -> VisionTransformer:
    """ViT-Base: width 768, depth 12, 12 heads."""
    return _create_vit(768, 12, 12, **kwargs)
