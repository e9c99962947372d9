"""Vision Transformer (Dosovitskiy et al., ICLR 2021) in the timm / DINO parameter layout.

Parameter names (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.norm1``,
``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.norm2``, ``blocks.N.mlp.fc1/fc2``,
``norm``, ``head``) and the forward computation follow timm's ``VisionTransformer`` and
DINO's ``vision_transformer.py``, so their checkpoints load with no key mapping.

The same class holds the layouts built on it (read from a checkpoint's keys by
:func:`detect_vit_layout`):

* **DINOv2** (Oquab et al., 2023; official ``dinov2/models/vision_transformer.py`` and timm's
  ``vit_*_patch14_dinov2``): LayerScale ``blocks.N.ls1.gamma`` / ``ls2.gamma``; with registers
  (Darcet et al., ICLR 2024) either the official ``register_tokens`` (inserted after the CLS
  token *after* the position embedding, which keeps a CLS slot) or timm's ``reg_token``
  (``no_embed_class``: ``pos_embed`` has no prefix slots, prefix tokens get no position).
  Position embeddings of the official models without registers are resized by a scale factor
  ``(g + 0.1) / M`` without antialias (``pos_interpolation="dinov2"``); everything else by
  target size with antialias (``"timm"``).
* **DeiT distilled** (Touvron et al., ICML 2021): ``dist_token`` after the CLS token, a
  second head ``head_dist`` on it; logits are the mean of the two heads (timm's eval).

Token order is always ``[CLS, (dist), (registers), patches]``: ``num_prefix_tokens`` counts
the tokens before the patches.

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
from .vit_layout import detect_vit_layout  # noqa: F401  (re-exported: the layout read from a checkpoint)


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


class SwiGLU(nn.Module):
    """SwiGLU FFN (Shazeer, 2020; DINOv2 ViT-g): ``out(silu(a) * b)`` with ``[a | b] = packed(x)``.

    ``names``: the packed input and the output linear layers' names -- the official DINOv2
    ``("w12", "w3")`` (``SwiGLUFFNFused``) or timm's ``("fc1", "fc2")`` (``SwiGLUPacked``); same
    computation, the gate is the first half in both. ``hidden``: the width of ``a`` (``w3``'s input).
    """

    def __init__(self, dim: int, hidden: int, names: tuple[str, str] = ("w12", "w3")):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(dim, 2 * hidden))
        setattr(self, names[1], nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = getattr(self, self.names[0])(x).chunk(2, dim=-1)
        return getattr(self, self.names[1])(F.silu(a) * b)


#: feed-forward layers of a block: the plain MLP, or SwiGLU in the official DINOv2 / timm naming
FFN_LAYERS = {"mlp": None, "swiglu": ("w12", "w3"), "swiglu_timm": ("fc1", "fc2")}


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """The official ``SwiGLUFFNFused`` width: ``(int(dim * mlp_ratio * 2 / 3) + 7) // 8 * 8`` (4096 for ViT-g's 1536)."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


class LayerScale(nn.Module):
    """Per-channel scale ``x * gamma`` (CaiT; DINOv2's ``ls1`` / ``ls2``)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, ffn: str = "mlp", ffn_hidden: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        if ffn == "mlp":
            self.mlp = Mlp(dim, ffn_hidden or int(dim * mlp_ratio))
        else:
            self.mlp = SwiGLU(dim, ffn_hidden or swiglu_hidden(dim, mlp_ratio), FFN_LAYERS[ffn])
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


#: how position embeddings are resized to another grid (see the module docstring); ``"dino"``
#: (DINO v1's code, also iBOT's and FewTURE's) resizes as ``"dinov2"`` does
POS_INTERPOLATIONS = ("timm", "dinov2", "dino")
#: the values that resize by scale factor ``(g + 0.1) / M`` at every forward, from the checkpoint's grid
OFFSET_INTERPOLATIONS = ("dinov2", "dino")


def resample_pos_embed_dinov2(patch_pos: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int]) -> torch.Tensor:
    """The official DINOv2 resize (models without registers), and DINO v1's: bicubic by scale factor
    ``(g + 0.1) / M`` per axis, no antialias. ``[1, M_h*M_w, C]`` -> ``[1, h*w, C]``."""
    c = patch_pos.shape[-1]
    grid = patch_pos.float().reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)
    scale = ((new_grid[0] + 0.1) / old_grid[0], (new_grid[1] + 0.1) / old_grid[1])
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != tuple(new_grid):
        raise ValueError(f"DINOv2 position resize gave {tuple(grid.shape[-2:])}, expected {new_grid}")
    return grid.permute(0, 2, 3, 1).reshape(1, -1, c).to(patch_pos.dtype)


class VisionTransformer(nn.Module):
    """ViT with a CLS token; ``num_classes=0`` gives a headless backbone (DINO / iBOT / FewTURE / DINOv2).

    ``forward(x)`` returns logits ``[B, num_classes]`` (distilled: the mean of ``head`` on the
    CLS token and ``head_dist`` on the distillation token) or, headless, the normalised CLS
    token ``[B, C]``. ``forward_features(x)`` returns all tokens after the final norm,
    ``[B, P + h*w, C]`` (``P = num_prefix_tokens``). Inputs whose size differs from
    ``img_size`` get bicubically resampled position embeddings; both sides must be multiples
    of the patch size.

    Layout options (read from a checkpoint by :func:`detect_vit_layout`): ``init_values``
    (LayerScale), ``reg_tokens`` with ``reg_layout`` ``"timm"`` (``reg_token``) or
    ``"dinov2"`` (``register_tokens``), ``no_embed_class``, ``distilled``, ``pos_interpolation``.
    """

    num_prefix_tokens = 1

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, num_classes: int = 0, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = True, init_values: float | None = None,
                 reg_tokens: int = 0, reg_layout: str = "timm", no_embed_class: bool = False, distilled: bool = False,
                 pos_interpolation: str = "timm", ffn: str = "mlp", ffn_hidden: int | None = None):
        super().__init__()
        img_size, patch_size = _pair(img_size), _pair(patch_size)
        if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
            raise ValueError(f"image_size {img_size} is not a multiple of patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if reg_layout not in ("timm", "dinov2") or pos_interpolation not in POS_INTERPOLATIONS:
            raise ValueError(f"reg_layout must be timm|dinov2 and pos_interpolation one of {POS_INTERPOLATIONS}")
        if ffn not in FFN_LAYERS:
            raise ValueError(f"ffn must be one of {tuple(FFN_LAYERS)}, got {ffn!r}")
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.num_reg_tokens, self.reg_layout, self.distilled = int(reg_tokens), reg_layout, bool(distilled)
        self.no_embed_class, self.pos_interpolation = bool(no_embed_class), pos_interpolation
        self.num_prefix_tokens = 1 + int(self.distilled) + self.num_reg_tokens
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if self.distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if self.num_reg_tokens:  # timm's name, or the official DINOv2 one
            name = "reg_token" if reg_layout == "timm" else "register_tokens"
            setattr(self, name, nn.Parameter(torch.zeros(1, self.num_reg_tokens, embed_dim)))
        self.pos_grid = self.patch_embed.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, self._pos_slots() + self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values, ffn, ffn_hidden)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if self.distilled:
            self.head_dist = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {"input_size": (in_chans, *img_size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        self._init_weights()

    def _pos_slots(self) -> int:
        """Prefix tokens that have a slot in ``pos_embed`` (0 with ``no_embed_class``)."""
        if self.no_embed_class:
            return 0
        return 1 + int(self.distilled) + (self.num_reg_tokens if self.reg_layout == "timm" else 0)

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

    def _resized_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if tuple(grid) == tuple(self.pos_grid):
            return self.pos_embed
        slots = self._pos_slots()
        if self.pos_interpolation in OFFSET_INTERPOLATIONS:
            patches = resample_pos_embed_dinov2(self.pos_embed[:, slots:], grid, self.pos_grid)
            return torch.cat([self.pos_embed[:, :slots], patches], dim=1)
        return resample_pos_embed(self.pos_embed, grid, self.pos_grid, num_prefix_tokens=slots)

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b = x.shape[0]
        pos = self._resized_pos_embed(grid)
        prefix = [self.cls_token] + ([self.dist_token] if self.distilled else [])
        if self.num_reg_tokens and self.reg_layout == "timm":
            prefix.append(self.reg_token)
        prefix = [t.expand(b, -1, -1) for t in prefix]
        x = torch.cat(prefix + [x + pos], 1) if self.no_embed_class else torch.cat(prefix + [x], 1) + pos
        if self.num_reg_tokens and self.reg_layout == "dinov2":  # official: after the position embedding
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid_size_for(x.shape[-2], x.shape[-1])
        x = self._pos_embed(self.patch_embed(x), grid)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.distilled:  # timm's eval: the mean of the class and distillation heads
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def checkpoint_filter(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapt a checkpoint to this model's grid.

        timm layouts: ``pos_embed`` is resampled to this grid once, at load (as timm does).
        Official DINOv2 / DINO layouts (``pos_interpolation`` ``"dinov2"`` / ``"dino"``, or ``register_tokens``): the
        checkpoint's own (square) grid is kept and every forward resizes from it, as the official
        code does -- a resize at load and another per forward would not give the official values.
        """
        pe = state_dict.get("pos_embed")
        if pe is None or pe.ndim != 3 or pe.shape[1] == self.pos_embed.shape[1]:
            return state_dict
        slots = self._pos_slots()
        side = math.isqrt(pe.shape[1] - slots)
        if side * side != pe.shape[1] - slots:
            return state_dict  # leave it: the shape check reports the mismatch
        if self.pos_interpolation in OFFSET_INTERPOLATIONS or (self.num_reg_tokens and self.reg_layout == "dinov2"):
            self.pos_embed = nn.Parameter(torch.zeros_like(pe, dtype=self.pos_embed.dtype, device=self.pos_embed.device))
            self.pos_grid = (side, side)
            return state_dict
        return dict(state_dict, pos_embed=resample_pos_embed(pe, self.patch_embed.grid_size, num_prefix_tokens=slots))


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
    """ViT-Small: width 384, depth 12, 6 heads (DINO ViT-S; DINOv2 ViT-S/14, DeiT-S with their checkpoints)."""
    return _create_vit(384, 12, 6, **kwargs)


@register_model
def vit_base(**kwargs: Any) -> VisionTransformer:
    """ViT-Base: width 768, depth 12, 12 heads (DINOv2 ViT-B/14, DeiT-B with their checkpoints)."""
    return _create_vit(768, 12, 12, **kwargs)


@register_model
def vit_large(**kwargs: Any) -> VisionTransformer:
    """ViT-Large: width 1024, depth 24, 16 heads (DINOv2 ViT-L/14 with its checkpoint)."""
    return _create_vit(1024, 24, 16, **kwargs)


@register_model
def vit_giant2(**kwargs: Any) -> VisionTransformer:
    """ViT-giant2 (DINOv2's name): width 1536, depth 40, 24 heads, SwiGLU FFN of width 4096 (DINOv2 ViT-g/14 with its checkpoint,
    official or timm layout)."""
    return _create_vit(1536, 40, 24, **{"ffn": "swiglu", **kwargs})
