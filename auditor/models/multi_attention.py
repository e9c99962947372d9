"""The multi-attention few-shot ViT of the FewTURE fork (Hiller et al., NeurIPS 2022 backbone).

An iBOT / DINO ViT whose blocks may be replaced by

* **MAB** (mixed attention block): Swin-style window MSA with a relative position bias
  (Liu et al., ICCV 2021; cyclic shift by ``window_size // 2`` on odd blocks) followed by a
  **CAB** channel attention block (SE-style sigmoid weights from average + max pooling, then
  a depthwise 3x3 conv), then an MLP -- ``blocks.N.attn.{norm1,attn,cab,cab_norm,norm2,mlp}``;
* **OCAB** (overlapping cross-attention, as in HAT): queries from ``window_size`` windows,
  keys / values from ``int(1.5 * window_size)`` windows around them --
  ``blocks.N.attn.{norm1,norm_kv,q,kv,proj,norm2,mlp}``;

and a **DRFF** (dual reconstruction feature fusion: depthwise convs of kernel 3, 5, 7 ...,
attention feature fusion AFFM, multi-scale channel attention MS-CAM, a refinement) after
the encoder (``drff.{scale_convs,affm,mscam,refine}``, :mod:`.drff`). Parameter and buffer names, the
forward, and the quirks follow the fork's ``models/vision_transformer.py``
(github.com/dinhmanhhai/FewTURE-HaiDM, commit 5263789f), so its checkpoints load as they are:

* MAB / OCAB blocks keep the outer block's ``norm1`` / ``norm2`` / ``mlp`` but never use them;
* the CLS token **bypasses** every MAB / OCAB block and the DRFF: it leaves the encoder as
  ``norm(cls_token + pos_embed[0])``, the same for every image (``cls_bypasses_blocks``);
* ``use_mab`` wins over ``use_ocab``: with both set no OCAB is built (noted in ``notes``);
* a MAB whose grid fits in one window uses the grid's size as window and no shift.

Where the reference cannot run, this code generalises instead of failing: the token grid
comes from the input (not the training size), DRFF takes non-square grids, and OCAB (which
in the reference only runs when the grid is exactly one window and ``1.5 * w - w`` is even)
works for any grid: the grid gets the reference's border of ``p = (W_ov - w) // 2`` zero
tokens (unmasked, as HAT's zero-padded unfold), and tokens added beyond it to complete whole
windows are masked out as keys and dropped as queries. Where the reference runs, the
results are the same.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from .drff import DualReconstructionFeatureFusion
from .vit import Mlp, VisionTransformer

#: keyword arguments of :func:`~.vit._create_vit` that select this architecture
MULTI_ATTENTION_KWARGS = ("use_mab", "use_ocab", "use_drff", "window_size", "drff_num_scales")
FLAGS = ("use_mab", "use_ocab", "use_drff")


def _norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)  # the reference's norm_layer, passed down to MAB / OCAB


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``[B, H, W, C]`` (``H``, ``W`` multiples of ``ws``) -> ``[B * nW, ws * ws, C]``, windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws * ws, C]`` -> ``[B, H, W, C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _split_cls(x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor]:
    n = grid[0] * grid[1]
    if x.shape[1] == n + 1:
        return x[:, :1], x[:, 1:]
    if x.shape[1] != n:
        raise ValueError(f"{x.shape[1]} tokens do not fit a {grid[0]}x{grid[1]} grid")
    return None, x


def _join_cls(cls: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if cls is None else torch.cat([cls, x], dim=1)


class ChannelAttentionBlock(nn.Module):
    """CAB: ``w = sigmoid(fc2(relu(fc1(avgpool x))) + fc2(relu(fc1(maxpool x))))``, ``y = x w + dwconv3x3(x w)``.

    ``x``: ``[B, C, H, W]``. The channel weights ``[B, C, 1, 1]`` are the output of ``sigmoid``.
    """

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.gap, self.gmp = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1)
        self.sigmoid = nn.Sigmoid()
        self.conv3x3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.sigmoid(self.fc2(self.act(self.fc1(self.gap(x)))) + self.fc2(self.act(self.fc1(self.gmp(x)))))
        x = x * weights
        return x + self.conv3x3(x)


def relative_position_index(ws: int) -> torch.Tensor:
    """``[ws*ws, ws*ws]`` index into the ``(2ws-1)^2`` bias table (Swin)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """W-MSA with relative position bias; ``softmax`` outputs the probabilities ``[B*nW, heads, N, N]``."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.window_size, self.num_heads = (window_size, window_size), num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.softmax = nn.Softmax(dim=-1)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, self.num_heads, n, n) + mask[None, :, None]).view(b, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class MixedAttentionBlock(nn.Module):
    """MAB: ``x += WMSA(norm1 x)``; ``x += cab_norm(CAB(x))``; ``x += mlp(norm2 x)`` on the patch tokens."""

    def __init__(self, dim: int, grid: tuple[int, int], num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, cab_reduction: int = 16):
        super().__init__()
        if min(grid) <= window_size:  # the whole grid fits in one window: no shift (reference)
            shift_size, window_size = 0, min(grid)
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = _norm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.cab = ChannelAttentionBlock(dim, cab_reduction)
        self.cab_norm = _norm(dim)

    def _padded(self, grid: tuple[int, int]) -> tuple[int, int]:
        ws = self.window_size
        return -(-grid[0] // ws) * ws, -(-grid[1] // ws) * ws

    def to_windows(self, x: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
        """``[B, H, W, C]`` -> padded (bottom / right), cyclically shifted windows ``[B*nW, ws*ws, C]``."""
        hp, wp = self._padded(x.shape[1:3])
        x = F.pad(x, (0, 0, 0, wp - x.shape[2], 0, hp - x.shape[1]), value=pad_value)
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        return window_partition(x, self.window_size)

    def token_windows(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[nW, ws*ws]`` long: the row-major grid index of the token in each window slot, -1 for padding."""
        index = torch.arange(grid[0] * grid[1], dtype=torch.float64).view(1, *grid, 1)
        return self.to_windows(index, pad_value=-1.0)[..., 0].long()

    def attention_mask(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        """Shifted windows: ``[nW, N, N]``, 0 within a region, -100 across regions (Swin); else None."""
        if not self.shift_size:
            return None
        hp, wp = self._padded(grid)
        ws, s = self.window_size, self.shift_size
        labels = torch.zeros(1, hp, wp, 1, device=device)
        cuts = (slice(0, -ws), slice(-ws, -s), slice(-s, None))
        for i, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
            labels[:, h, w] = i
        windows = window_partition(labels, ws)[..., 0]
        diff = windows[:, None, :] - windows[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        cls, x = _split_cls(x, grid)
        b, _, c = x.shape
        h, w = grid
        hp, wp = self._padded(grid)
        windows = self.attn(self.to_windows(self.norm1(x).view(b, h, w, c)), self.attention_mask(grid, x.device))
        y = window_reverse(windows, self.window_size, hp, wp)
        if self.shift_size:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x + y[:, :h, :w].reshape(b, h * w, c)
        channels = self.cab(x.transpose(1, 2).reshape(b, c, h, w))
        x = x + self.cab_norm(channels.flatten(2).transpose(1, 2))
        x = x + self.mlp(self.norm2(x))
        return _join_cls(cls, x)


class OverlappingCrossAttentionBlock(nn.Module):
    """OCAB: queries from ``w x w`` windows of ``norm1 x``, keys / values from the ``W_ov x W_ov``
    windows around them of ``norm_kv(norm1 x)``; ``attn_drop`` outputs ``[B*nW, heads, w*w, W_ov*W_ov]``."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.overlap_window_size = int(window_size * (1 + overlap_ratio))
        self.border = (self.overlap_window_size - window_size) // 2
        self.scale = (dim // num_heads) ** -0.5
        self.norm1, self.norm_kv = _norm(dim), _norm(dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.norm2 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def key_windows(self, x: torch.Tensor, grid: tuple[int, int], pad_value: float = 0.0):
        """``[B, C, H, W]`` -> keys ``[B*nW, W_ov^2, C]`` and the key mask ``[nW, W_ov^2]`` (None if all valid)."""
        ws, ov, p = self.window_size, self.overlap_window_size, self.border
        hp, wp = (-(-g // ws) * ws for g in grid)
        extra_h, extra_w = hp - ws + ov - grid[0] - 2 * p, wp - ws + ov - grid[1] - 2 * p
        x = F.pad(F.pad(x, (p, p, p, p), value=pad_value), (0, extra_w, 0, extra_h), value=pad_value)
        b, c = x.shape[:2]
        keys = F.unfold(x, ov, stride=ws).view(b, c, ov * ov, -1).permute(0, 3, 2, 1).reshape(-1, ov * ov, c)
        if not (extra_h or extra_w):
            return keys, None
        valid = F.pad(torch.ones(1, 1, grid[0] + 2 * p, grid[1] + 2 * p, device=x.device), (0, extra_w, 0, extra_h))
        return keys, F.unfold(valid, ov, stride=ws)[0].T > 0.5

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        cls, x = _split_cls(x, grid)
        b, _, c = x.shape
        (h, w), ws, ov, heads = grid, self.window_size, self.overlap_window_size, self.num_heads
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        y = self.norm1(x)
        kv_in = self.norm_kv(y).transpose(1, 2).reshape(b, c, h, w)
        queries = window_partition(F.pad(y.view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h)), ws)
        keys, mask = self.key_windows(kv_in, grid)
        q = self.q(queries).reshape(-1, ws * ws, heads, c // heads).permute(0, 2, 1, 3)
        k, v = self.kv(keys).reshape(-1, ov * ov, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn.view(b, -1, heads, ws * ws, ov * ov).masked_fill(~mask[None, :, None, None], float("-inf"))
            attn = attn.view(-1, heads, ws * ws, ov * ov)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(-1, ws * ws, c)))
        x = x + window_reverse(out, ws, hp, wp)[:, :h, :w].reshape(b, h * w, c)
        x = x + self.mlp(self.norm2(x))
        return _join_cls(cls, x)


class BypassBlock(nn.Module):
    """The reference's ``Block`` around a MAB / OCAB: ``norm1`` / ``norm2`` / ``mlp`` exist (checkpoints
    hold them) but are unused; the CLS token passes through unchanged."""

    def __init__(self, dim: int, mlp_ratio: float, attn: nn.Module):
        super().__init__()
        self.norm1, self.attn, self.norm2 = _norm(dim), attn, _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.attn(x, grid)


class MultiAttentionViT(VisionTransformer):
    """:class:`~.vit.VisionTransformer` with MAB / OCAB blocks and / or DRFF (see the module docstring).

    ``forward_features(x)`` returns all tokens after the final norm ``[B, 1 + h*w, C]``;
    ``forward`` the head of the CLS token (constant when ``cls_bypasses_blocks``).
    """

    def __init__(self, *, use_mab: bool = False, use_ocab: bool = False, use_drff: bool = False,
                 window_size: int = 7, drff_num_scales: int = 3, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 **kwargs: Any):
        super().__init__(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, **kwargs)
        self.notes: list[str] = []
        if use_mab and use_ocab:
            self.notes.append("use_ocab was ignored: use_mab takes precedence (as in the reference), "
                              "so this model has no OCAB blocks")
            use_ocab = False
        self.use_mab, self.use_ocab, self.use_drff = bool(use_mab), bool(use_ocab), bool(use_drff)
        self.window_size = window_size
        self.cls_bypasses_blocks = self.use_mab or self.use_ocab
        dim, grid, heads = self.embed_dim, self.patch_embed.grid_size, self.blocks[0].attn.num_heads
        if self.use_mab:
            self.blocks = nn.ModuleList(BypassBlock(dim, mlp_ratio, MixedAttentionBlock(
                dim, grid, heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio, qkv_bias))
                for i in range(len(self.blocks)))
        elif self.use_ocab:
            self.blocks = nn.ModuleList(BypassBlock(dim, mlp_ratio, OverlappingCrossAttentionBlock(
                dim, heads, window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)) for _ in range(len(self.blocks)))
        self.drff = DualReconstructionFeatureFusion(dim, drff_num_scales) if self.use_drff else None
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid_size_for(x.shape[-2], x.shape[-1])
        x = self._pos_embed(self.patch_embed(x), grid)
        for blk in self.blocks:
            x = blk(x, grid) if self.cls_bypasses_blocks else blk(x)
        if self.drff is not None:
            b, _, c = x.shape
            patches = self.drff(x[:, 1:].transpose(1, 2).reshape(b, c, *grid))
            x = torch.cat([x[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)
        return self.norm(x)


def detect_flags(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture flags a checkpoint was trained with, read from its keys.

    ``use_mab``: ``blocks.N.attn.cab.*`` keys; ``use_ocab``: ``blocks.N.attn.kv.*``; ``use_drff``:
    ``drff.*``. Also ``window_size`` (from a MAB's relative position bias table; the effective
    window) and ``drff_num_scales`` when they can be read.
    """
    keys = list(state_dict)
    flags: dict[str, Any] = {
        "use_mab": any(re.match(r"blocks\.\d+\.attn\.cab\.", k) for k in keys),
        "use_ocab": any(re.match(r"blocks\.\d+\.attn\.kv\.", k) for k in keys),
        "use_drff": any(k.startswith("drff.") for k in keys),
    }
    table = next((v for k, v in state_dict.items() if k.endswith("attn.attn.relative_position_bias_table")), None)
    if table is not None:
        flags["window_size"] = (round(table.shape[0] ** 0.5) + 1) // 2
    scales = {k.split(".")[2] for k in keys if k.startswith("drff.scale_convs.")}
    if scales:
        flags["drff_num_scales"] = len(scales)
    return flags


def resolve_flags(given: dict[str, Any], state_dict: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Fill flags left as None from the checkpoint; a flag that contradicts it raises CheckpointError."""
    if state_dict is None:
        return {k: v for k, v in given.items() if v is not None}
    found = detect_flags(state_dict)
    out = {k: v for k, v in given.items() if v is not None}
    mab = given.get("use_mab") if given.get("use_mab") is not None else found["use_mab"]
    for flag in FLAGS:
        want = given.get(flag)
        if want is None:
            out[flag] = found[flag]
            continue
        if flag == "use_ocab" and want and mab and not found[flag]:
            continue  # use_mab wins: an OCAB flag beside MAB builds no OCAB (the reference's behaviour)
        if bool(want) != found[flag]:
            has = "has" if found[flag] else "has no"
            raise CheckpointError(
                f"{flag}={bool(want)} contradicts the checkpoint, which {has} {flag[4:].upper()} parameters; "
                f"drop {flag} (it is read from the checkpoint) or set it to {found[flag]}.")
    for key in ("window_size", "drff_num_scales"):
        if key in found and given.get(key) is None:
            out[key] = found[key]
    return out


__all__ = ["MULTI_ATTENTION_KWARGS", "MultiAttentionViT", "detect_flags", "resolve_flags"]
