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

Library models' adapters (timm Swin, transformers, OpenCLIP) live in :mod:`.library_adapters`.

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
from .windows import WindowBlock

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


from .library_adapters import HFAdapter, OpenClipAdapter, TimmSwinAdapter  # noqa: E402  (they subclass ModelAdapter)

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
