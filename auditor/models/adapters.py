"""Model adapters: the one place that knows a model family's layout.

Methods never ``isinstance`` a model class; they ask :func:`adapter_for` (``model -> adapter``):

* ``prefix_tokens()`` -- tokens before the patch tokens (CLS, distillation, registers; 0 for
  CNNs and global-pool models). The CLS token, when there is one, is token 0; the patch tokens
  are always the last ``h * w``, so maps read a row's columns ``prefix:``.
* ``grid(height, width)`` -- the patch grid ``(h, w)`` of an input (non-square allowed), or
  None when the model has no patch grid.
* ``attention_modules()`` -- ``(name, module)`` whose forward output is one block's post-softmax
  attention ``[B, heads, T, T]``; ``fused_attention_modules()`` -- modules whose ``fused_attn``
  switch the pass turns off (and restores) so that those outputs exist.
* ``gradcam_layer()`` / ``gradcam_layout`` -- Grad-CAM's default layer (None: the last feature
  map found during the pass) and how its output is laid out (``"tokens"`` ``B x T x C``,
  ``"nchw"``, ``"nhwc"``).
* ``final_tokens()`` -- the module whose output is the final tokens ``[B, P + N, C]``;
  ``headless()`` -- no class head (outputs are features).
* ``window_blocks()`` / ``channel_blocks()`` / ``cross_window_blocks()`` -- the windowed-attention
  (MAB, timm / transformers Swin), channel-attention (CAB) and overlapping cross-attention (OCAB)
  blocks; ``window_layout(height, width)`` -- each windowed block's grid, window slots, shift mask
  and the module its probabilities are read from (:class:`~.windows.WindowBlock`).

Families, tried in order: a model's own ``auditor_adapter`` attribute (an adapter instance: the
hook for user models), a transformers model loaded by ``--model hf:PATH``
(:class:`~.library.HFVisionModel`), OpenCLIP's image tower (detected by class name and module),
the multi-attention FewTURE backbone, timm Swin (detected by class name
and module, timm is never imported), ViTs with timm / DINO blocks (the built-in ViT incl.
DINOv2 / DeiT layouts, timm ``VisionTransformer`` / ``VisionTransformerDistilled``, a DINO-style
user module), and any other ``nn.Module`` (CNNs such as EfficientNet-Lite0).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from .windows import WindowBlock, shift_mask, stage_grids, token_windows

#: module name of the final tokens in timm / DINO ViTs
FINAL_TOKENS = "norm"


def _is_timm(model: nn.Module, *class_names: str) -> bool:
    cls = type(model)
    return cls.__module__.startswith("timm.") and cls.__name__ in class_names


def last_indexed(model: nn.Module, pattern: str, container: str = r"blocks") -> str | None:
    """Name of the module matching ``(prefix.)<container>.<i>.<pattern>`` with the largest ``i``."""
    best: tuple[int, str] | None = None  # also found inside a wrapper: ``backbone.blocks.11.norm1``
    for name, _ in model.named_modules():
        m = re.fullmatch(rf"(?:.*\.)?{container}\.(\d+)\.{pattern}", name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), name)
    return None if best is None else best[1]


class ModelAdapter:
    """Generic adapter: any ``nn.Module`` (CNNs): no prefix tokens, no readable attention,
    Grad-CAM on the last feature map ``B x C x h x w`` of the forward."""

    family: ClassVar[str] = "generic"
    gradcam_layout: ClassVar[str] = "nchw"

    def __init__(self, model: nn.Module):
        self.model = model

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return True

    def modules(self) -> dict[str, nn.Module]:
        return dict(self.model.named_modules())

    def prefix_tokens(self) -> int:
        return 0

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        return None

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        return []

    def attention_probs(self, output: Any) -> torch.Tensor | None:
        """The probabilities ``[B, heads, T, T]`` in an attention module's forward output, or None."""
        return output if isinstance(output, torch.Tensor) and output.ndim == 4 else None

    def attention_call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the pass forces on each attention module's call (forward pre-hook),
        e.g. ``need_weights=True`` for ``nn.MultiheadAttention``; empty: none."""
        return {}

    def fused_attention_modules(self) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]

    def cls_bypass_reason(self) -> str | None:
        return None

    def gradcam_layer(self) -> str | None:
        return None

    def final_tokens(self) -> str | None:
        return FINAL_TOKENS if FINAL_TOKENS in self.modules() else None

    def headless(self) -> bool:
        return getattr(self.model, "num_classes", None) == 0

    def window_blocks(self) -> list[tuple[str, nn.Module]]:
        return []

    def window_probs(self, name: str) -> str:
        """The module of window block ``name`` whose output carries its probabilities (:meth:`attention_probs`)."""
        return f"{name}.attn.softmax"

    def window_layout(self, height: int, width: int) -> list[WindowBlock]:
        """Each windowed block's layout on an input ``height x width`` (after the forward ran on it).

        Default: blocks with the MAB interface (``token_windows(grid)``, ``attention_mask(grid, device)``,
        ``window_size`` / ``shift_size``, probabilities out of ``attn.softmax``), all on the patch grid.
        """
        grid = self.grid(height, width)
        out = []
        for name, m in self.window_blocks():
            ws, s = m.window_size, m.shift_size
            out.append(WindowBlock(name, self.window_probs(name), tuple(grid), 1, tuple(grid), m.token_windows(grid),
                                   m.attention_mask(grid, torch.device("cpu")), (ws, ws), (s, s)))
        return out

    def lrp_blocks(self) -> list[str]:
        """Transformer blocks in the timm / DINO layout (``norm1``, ``attn.qkv``, ``attn.proj``,
        ``norm2``, ``mlp.fc1``, ``mlp.fc2``, optional ``ls1`` / ``ls2``) in forward order, for the LRP
        rules of Transformer Attribution; empty when the model has none."""
        return []

    def class_heads(self) -> list[tuple[str, int, float]]:
        """``(linear head module, token index, weight)``: the logits are ``sum_k weight_k head_k(final
        tokens[:, index_k])``; empty when the head is not linear layers on prefix tokens."""
        return []

    def channel_blocks(self) -> list[str]:
        """Channel attention layers in forward order (:meth:`channel_weights` names each one's weights module)."""
        return []

    def channel_weights(self, name: str) -> str:
        """The module whose output is channel attention layer ``name``'s weights."""
        return f"{name}.sigmoid"

    def cross_window_blocks(self) -> list[tuple[str, nn.Module]]:
        return []

    def token_grid(self, height: int, width: int, num_tokens: int) -> tuple[tuple[int, int], int]:
        """``((h, w), prefix)`` of a token sequence of length ``num_tokens`` for an input ``height x width``.

        Without a patch grid, a square grid after the prefix tokens is assumed; a prefix count
        that does not fit is corrected to ``num_tokens - h * w`` (patch tokens come last).
        """
        prefix = self.prefix_tokens()
        grid = self.grid(height, width)
        if grid is None:
            side = math.isqrt(max(num_tokens - prefix, 0))
            grid = (side, side)
        if grid[0] * grid[1] + prefix != num_tokens:
            prefix = num_tokens - grid[0] * grid[1]
            if prefix < 0:
                raise NotApplicableError(f"cannot map {num_tokens} tokens onto a {grid[0]}x{grid[1]} patch grid")
        return grid, prefix

    def describe(self) -> dict[str, Any]:
        """What the methods see: family, prefix tokens, attention layers, Grad-CAM layer, head."""
        return {"family": self.family, "prefix_tokens": self.prefix_tokens(),
                "attention_layers": len(self.attention_modules()), "gradcam_layer": self.gradcam_layer(),
                "headless": self.headless()}


class ViTAdapter(ModelAdapter):
    """ViTs with timm / DINO blocks: attention read at ``blocks.N.attn.attn_drop`` (timm's
    non-fused path, DINO, the built-in ViT); prefix tokens from ``num_prefix_tokens`` (timm and
    the built-in ViT: CLS + distillation + registers; 1 for DINO-style modules without it)."""

    family = "vit"
    gradcam_layout = "tokens"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return any(n.endswith("attn.attn_drop") for n, _ in model.named_modules())

    def prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1))

    def grid(self, height: int, width: int) -> tuple[int, int] | None:
        if hasattr(self.model, "grid_size_for"):
            return tuple(self.model.grid_size_for(height, width))
        p = getattr(getattr(self.model, "patch_embed", None), "patch_size", None)
        if p is None:
            return None
        ph, pw = (p, p) if isinstance(p, int) else tuple(p)
        return height // ph, width // pw

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.model.named_modules() if n.endswith("attn.attn_drop")]

    def gradcam_layer(self) -> str | None:
        return last_indexed(self.model, r"norm1")

    def lrp_blocks(self) -> list[str]:
        mods = self.modules()
        parts = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        plain = lambda m: m is None or isinstance(m, nn.Identity)  # noqa: E731  (timm's q_norm / k_norm / norm)
        return [n for n in mods if re.fullmatch(r"(?:.*\.)?blocks\.\d+", n) and all(f"{n}.{p}" in mods for p in parts)
                and all(plain(getattr(mods[f"{n}.attn"], a, None)) for a in ("q_norm", "k_norm", "norm"))]

    def class_heads(self) -> list[tuple[str, int, float]]:
        m, mods = self.model, self.modules()
        if (getattr(m, "global_pool", "token") not in ("token", None) or not isinstance(mods.get("head"), nn.Linear)
                or not isinstance(getattr(m, "fc_norm", None), (nn.Identity, type(None)))):
            return []
        if isinstance(mods.get("head_dist"), nn.Linear):  # DeiT distilled: the mean of both heads (eval)
            return [("head", 0, 0.5), ("head_dist", 1, 0.5)]
        return [("head", 0, 1.0)]


class MultiAttentionAdapter(ViTAdapter):
    """The FewTURE fork's multi-attention backbone (:mod:`.multi_attention`): with MAB / OCAB
    blocks the CLS token bypasses every block, so no CLS-based method applies; Grad-CAM reads
    the last block's inner ``attn.norm1`` (the window attention's input, patch tokens only)."""

    family = "multi_attention"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        from .multi_attention import MultiAttentionViT

        return isinstance(model, MultiAttentionViT)

    def _bypass(self) -> bool:
        return bool(getattr(self.model, "cls_bypasses_blocks", False))

    def cls_bypass_reason(self) -> str | None:
        if self._bypass():
            return ("the CLS token bypasses every block of this model (MAB / OCAB blocks pass it through unchanged), "
                    "so it is the same for every image and says nothing about where the model looks")
        return None

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        return [] if self._bypass() else super().attention_modules()

    def gradcam_layer(self) -> str | None:
        return last_indexed(self.model, r"attn\.norm1" if self._bypass() else r"norm1")

    def window_blocks(self) -> list[tuple[str, nn.Module]]:
        from .multi_attention import MixedAttentionBlock

        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, MixedAttentionBlock)]

    def channel_blocks(self) -> list[str]:
        from .drff import MultiScaleChannelAttention
        from .multi_attention import ChannelAttentionBlock

        kinds = (ChannelAttentionBlock, MultiScaleChannelAttention)  # CABs, then DRFF's MS-CAM (forward order)
        return [n for n, m in self.model.named_modules() if isinstance(m, kinds)]

    def channel_weights(self, name: str) -> str:
        from .multi_attention import ChannelAttentionBlock

        return f"{name}.sigmoid" if isinstance(self.model.get_submodule(name), ChannelAttentionBlock) else f"{name}.fusion"

    def cross_window_blocks(self) -> list[tuple[str, nn.Module]]:
        from .multi_attention import OverlappingCrossAttentionBlock

        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, OverlappingCrossAttentionBlock)]


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


#: adapter classes, tried in order (the first that matches)
ADAPTERS: list[type[ModelAdapter]] = [HFAdapter, OpenClipAdapter, MultiAttentionAdapter, TimmSwinAdapter, ViTAdapter,
                                      ModelAdapter]


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter of ``model``: its own ``auditor_adapter`` if it has one, else the first of
    :data:`ADAPTERS` that matches."""
    own = getattr(model, "auditor_adapter", None)
    if isinstance(own, ModelAdapter):
        return own
    return next(cls for cls in ADAPTERS if cls.matches(model))(model)


__all__ = ["ADAPTERS", "FINAL_TOKENS", "HFAdapter", "ModelAdapter", "MultiAttentionAdapter", "OpenClipAdapter",
           "TimmSwinAdapter", "ViTAdapter", "adapter_for", "last_indexed"]
