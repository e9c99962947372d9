"""The ViT layout a checkpoint was saved with, read from its keys (:func:`detect_vit_layout`).

The options returned are :class:`~.vit.VisionTransformer`'s: LayerScale, registers (official DINOv2
or timm naming), the distillation token, position-embedding slots and resize, the FFN (plain MLP or
SwiGLU in the official DINOv2 / timm naming).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch


def _square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def detect_vit_layout(state_dict: dict[str, torch.Tensor], num_patches: int | None = None) -> dict[str, Any]:
    """The ViT layout options a checkpoint was saved with, read from its keys.

    ``blocks.N.ls1.gamma`` -> ``init_values``; ``register_tokens`` (official DINOv2) or
    ``reg_token`` (timm) -> ``reg_tokens`` / ``reg_layout``; ``dist_token`` -> ``distilled``;
    an official DINOv2 checkpoint (``mask_token``) without registers -> ``pos_interpolation="dinov2"``;
    a headless plain ViT (no head, LayerScale, registers, distillation token nor ``mask_token``: DINO v1 /
    iBOT / FewTURE backbones, whose code resizes as DINOv2's does, by the +0.1 scale factor) ->
    ``pos_interpolation="dino"``. The FFN: ``blocks.N.mlp.w12`` -> ``ffn="swiglu"`` (official DINOv2
    ViT-g), ``mlp.fc1`` twice as wide as ``mlp.fc2``'s input -> ``ffn="swiglu_timm"`` (timm's
    ``SwiGLUPacked``), both with ``ffn_hidden`` from the weights.
    ``no_embed_class`` when ``pos_embed`` has no prefix slots: its token count equals
    ``num_patches`` (the grid the model is built for), or else the count without slots is not a
    square but the count is. Only options that differ from a plain ViT are returned.
    """
    out: dict[str, Any] = {}
    if any(re.fullmatch(r"blocks\.\d+\.ls1\.gamma", k) for k in state_dict):
        out["init_values"] = 1.0  # the value is the checkpoint's
    regs = state_dict.get("register_tokens", state_dict.get("reg_token"))
    if regs is not None and regs.ndim == 3:
        out["reg_tokens"] = int(regs.shape[1])
        out["reg_layout"] = "dinov2" if "register_tokens" in state_dict else "timm"
    if "dist_token" in state_dict:
        out["distilled"] = True
    pe = state_dict.get("pos_embed")
    if pe is not None and pe.ndim == 3:
        slots = 1 + int("dist_token" in state_dict) + (int(regs.shape[1]) if "reg_token" in state_dict else 0)
        count = int(pe.shape[1])
        if count != (num_patches or 0) + slots and (count == num_patches or (_square(count) and not _square(count - slots))):
            out["no_embed_class"] = True
    if "mask_token" in state_dict and "register_tokens" not in state_dict:
        out["pos_interpolation"] = "dinov2"
    elif not out and "mask_token" not in state_dict and not any(k.startswith("head") for k in state_dict):
        out["pos_interpolation"] = "dino"
    out.update(_detect_ffn(state_dict))
    return out


def _detect_ffn(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``ffn`` / ``ffn_hidden`` of the first block's feed-forward weights (nothing for the plain MLP)."""
    w12, fc1, fc2 = (state_dict.get(f"blocks.0.mlp.{n}.weight") for n in ("w12", "fc1", "fc2"))
    if w12 is not None and w12.ndim == 2:
        return {"ffn": "swiglu", "ffn_hidden": int(w12.shape[0]) // 2}
    if fc1 is not None and fc2 is not None and fc1.ndim == fc2.ndim == 2 and fc1.shape[0] == 2 * fc2.shape[1]:
        return {"ffn": "swiglu_timm", "ffn_hidden": int(fc2.shape[1])}
    return {}
