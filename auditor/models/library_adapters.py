"""Adapters of library models (see :mod:`.adapters` for the interface): timm Swin, a
transformers model loaded by ``--model hf:PATH``, and OpenCLIP's image tower. None of these
libraries is imported here; the models are recognised by class name and module."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn

from .adapters import ModelAdapter, _is_timm, last_indexed
from .windows import WindowBlock, shift_mask, stage_grids, token_windows


class TimmSwinAdapter(ModelAdapter):
    """timm ``SwinTransformer``: no prefix tokens (global pool), features kept NHWC
    ``B x H x W x C``; Grad-CAM on ``layers.<last>.blocks.<last>.norm1`` (pytorch-grad-cam's choice).
    Window blocks ``layers.S.blocks.B``: probabilities out of ``attn.softmax`` (non-fused path), the
    grid rolled before it is padded (``"roll_then_pad"``), stage ``S`` after the patch mergings so far."""

    family = "timm_swin"
    gradcam_layout = "nhwc"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return _is_timm(model, "SwinTransformer")

    def gradcam_layer(self) -> str | None:
        names = [n for n, _ in self.model.named_modules() if re.fullmatch(r"layers\.\d+\.blocks\.\d+\.norm1", n)]
        return max(names, key=lambda n: tuple(int(i) for i in re.findall(r"\d+", n)), default=None)

    def final_tokens(self) -> str | None:
        return None  # NHWC feature maps, no token sequence

    def window_blocks(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.model.named_modules() if re.fullmatch(r"layers\.\d+\.blocks\.\d+", n)]

    def window_layout(self, height: int, width: int) -> list[WindowBlock]:
        pe = self.model.patch_embed
        (ph, pw), pad = pe.patch_size, bool(getattr(pe, "dynamic_img_pad", False))
        patch = (-(-height // ph), -(-width // pw)) if pad else (height // ph, width // pw)
        merges = [0]  # patch mergings before each stage's blocks (timm: a stage's downsample runs first)
        for stage in self.model.layers:
            merges.append(merges[-1] + int(not isinstance(stage.downsample, nn.Identity)))
        grids = stage_grids(patch, merges[-1] + 1)
        out = []
        for name, m in self.window_blocks():
            k = merges[int(name.split(".")[1]) + 1]
            ws, sh = tuple(map(int, m.window_size)), tuple(map(int, m.shift_size))
            out.append(WindowBlock(name, self.window_probs(name), grids[k], 2 ** k, patch,
                                   token_windows(grids[k], ws, sh, "roll_then_pad"), shift_mask(grids[k], ws, sh), ws, sh))
        return out


class HFAdapter(ModelAdapter):
    """A transformers model wrapped by :class:`~.library.HFVisionModel` (ViT, DeiT, Dinov2 with or
    without registers, CLIP vision; Swin: Grad-CAM on the last block's ``layernorm_before``,
    tokens ``B x (h*w) x C`` of the last stage's grid). Prefix tokens from the config (DeiT:
    CLS + distillation; Dinov2WithRegisters: CLS + registers), the grid from ``patch_size``;
    Swin's window blocks ``...layers.S.blocks.B`` give window attention (probabilities: the second
    output of their ``attention``);
    attention probabilities are the second output of each eager attention module (transformers
    5.x: ``q_proj`` / ``k_proj``), read by hooks on the loaded model's own module names."""

    family = "hf"
    gradcam_layout = "tokens"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        from .library import HFVisionModel

        return isinstance(model, HFVisionModel)

    def _config(self) -> Any:
        return self.model.hf.config

    def prefix_tokens(self) -> int:
        kind = self.model.model_type
        if kind == "swin":
            return 0
        return {"deit": 2}.get(kind, 1) + int(getattr(self._config(), "num_register_tokens", 0) or 0)

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        p = self._config().patch_size
        ph, pw = (p, p) if isinstance(p, int) else tuple(p)
        if self.model.model_type == "swin":  # the last stage's tokens: each stage after the first halves the grid
            down = 2 ** (len(self._config().depths) - 1)
            ph, pw = ph * down, pw * down
        return height // ph, width // pw

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        if self.model.model_type == "swin":
            return []  # windows, no CLS token
        return [(n, m) for n, m in self.model.named_modules() if type(m).__name__.endswith("Attention")
                and hasattr(m, "q_proj") and hasattr(m, "k_proj")]

    def attention_probs(self, output: Any) -> torch.Tensor | None:
        if isinstance(output, (tuple, list)) and len(output) > 1:
            return super().attention_probs(output[1])
        return None

    def gradcam_layer(self) -> str | None:
        if self.model.model_type == "swin":  # the last stage's last block (pytorch-grad-cam's Swin choice)
            found = [(tuple(map(int, m.groups())), n) for n, _ in self.model.named_modules()
                     if (m := re.fullmatch(r".*layers\.(\d+)\.blocks\.(\d+)\.layernorm_before", n))]
            return max(found)[1] if found else None
        return last_indexed(self.model, r"(?:layernorm_before|layer_norm1|norm1)", r"layers?")

    def final_tokens(self) -> str | None:
        names = [n for n, _ in self.model.named_modules() if re.fullmatch(r"hf\.(?:\w+\.)?layernorm", n)]
        return names[0] if names else None

    def window_blocks(self) -> list[tuple[str, nn.Module]]:
        if self.model.model_type != "swin":
            return []
        return [(n, m) for n, m in self.model.named_modules()
                if re.fullmatch(r".*layers\.\d+\.blocks\.\d+", n) and hasattr(m, "attention")]

    def window_probs(self, name: str) -> str:
        return f"{name}.attention"

    def window_layout(self, height: int, width: int) -> list[WindowBlock]:
        """transformers ``SwinLayer``: the input padded to whole patches, each stage after the first
        halves the grid, the grid padded before it is rolled; window and shift as the layer ran them
        (it narrows its window to a grid smaller than the window, and drops the shift, on the first forward)."""
        p = self._config().patch_size
        ph, pw = (p, p) if isinstance(p, int) else tuple(p)
        patch = (-(-height // ph), -(-width // pw))
        grids = stage_grids(patch, len(self._config().depths))
        out = []
        for name, m in self.window_blocks():
            k = int(re.fullmatch(r".*layers\.(\d+)\.blocks\.\d+", name).group(1))
            ws, sh = (int(m.window_size),) * 2, (int(m.shift_size),) * 2
            out.append(WindowBlock(name, self.window_probs(name), grids[k], 2 ** k, patch,
                                   token_windows(grids[k], ws, sh, "pad_then_roll"), shift_mask(grids[k], ws, sh), ws, sh))
        return out


class OpenClipAdapter(ModelAdapter):
    """OpenCLIP's image tower ``open_clip.transformer.VisionTransformer`` (also OpenAI CLIP weights
    loaded through OpenCLIP), given by ``--model package.module:factory``: CLS token first, the
    grid from ``patch_size``; its ``nn.MultiheadAttention`` modules are called with
    ``need_weights=False``, so the pass forces ``need_weights=True, average_attn_weights=False``
    and reads the per-head probabilities from their second output. Headless (an embedding)."""

    family = "open_clip"
    gradcam_layout = "tokens"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return type(model).__module__.startswith("open_clip.") and type(model).__name__ == "VisionTransformer"

    def prefix_tokens(self) -> int:
        return 1

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        p = self.model.patch_size
        ph, pw = (p, p) if isinstance(p, int) else tuple(p)
        return height // ph, width // pw

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, nn.MultiheadAttention)]

    def attention_call_kwargs(self) -> dict[str, Any]:
        return {"need_weights": True, "average_attn_weights": False}

    def attention_probs(self, output: Any) -> torch.Tensor | None:
        return super().attention_probs(output[1]) if isinstance(output, tuple) and len(output) > 1 else None

    def gradcam_layer(self) -> str | None:
        return last_indexed(self.model, r"ln_1", r"resblocks")

    def final_tokens(self) -> str | None:
        m = self.model
        return "ln_post" if getattr(m, "attn_pool", None) is None and not getattr(m, "final_ln_after_pool", False) else None

    def headless(self) -> bool:
        return True
