"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024): the target score's relevance, propagated back to the pixels with
rules made for attention, in one forward and one backward (lxt 2.1's "efficient" form).

The backward is a gradient whose non-linear steps are replaced so that ``input x gradient``
at every layer is that layer's LRP relevance (lxt 2.1 ``lxt/efficient/rules.py`` and
``patches.py``, tag v2.1, commit 3cd6d0d3):

* linear layers and the patch embedding (``qkv``, ``proj``, ``fc1``, ``fc2``, ``head``,
  ``patch_embed.proj``): the epsilon rule with the bias absorbed -- the plain gradient (lxt
  without zennit's gamma rules);
* element-wise activations (GELU): the identity rule (paper Eq. 9): the gradient through
  ``f`` is ``f(x) / (x + 1e-10)``, so the relevance passes through unchanged;
* LayerNorm: the identity rule on the normalisation: ``(x - mean) / std`` with ``std``
  detached (lxt's ``layer_norm_forward``);
* softmax: the paper's rule (Taylor decomposition at the input with the bias): the plain
  softmax gradient, ``R_in = x (R_out - s sum(R_out))``;
* ``q k^T`` and ``A v``: the uniform rule (paper Eq. 7), half of a product's relevance to each
  operand: the gradient at ``q`` and ``k`` is divided by 4 (half of ``A``'s half) and at ``v``
  by 2 (lxt's ``wrap_attention_forward``), applied at the output of ``attn.qkv``;
* residual additions, position embeddings, LayerScale: proportional / linear: plain gradient.

``attention="cp"`` uses CP-LRP inside the attention instead (Ali et al., ICML 2022: no relevance
through the softmax; ``q`` and ``k`` detached): lxt 2.1's default for torchvision's ViT
(``lxt/efficient/models/vit_torch.py``, "AttnLRP outside the attention mechanism & CP-LRP
inside").

The map is the relevance at the input pixels, summed over the colour channels, ``[B, H, W]``,
as lxt's ViT example computes it (``examples/vit_torch.py``: ``(input * input.grad).sum(1)``),
signed, displayed and scored after a ReLU (the evidence for the target). The relevance of the
biases, the position embeddings and the CLS token stays there (its share is not on the pixels).

Target: the class logit (or predicted class, or a headless ViT's CLS-output norm) as every other
method; ``patch-norm`` / ``prototype`` from the final tokens (support images in the same pass).

Applies to ViTs with timm / DINO blocks (the built-in ViT and its DINOv2 / DeiT / register
layouts, timm ``VisionTransformer``); a model with a module it has no rule for is skipped
with that module's name.

Cost: 1 forward + 1 backward per image of its own (the rules change the backward, so the shared
pass cannot serve it), batched ``batch_size`` images at a time.

Shapes: input ``B x 3 x H x W`` -> map ``B x H x W``.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..errors import NotApplicableError, UsageError
from ..models.adapters import adapter_for
from .base import MapResult, Method, Recording
from .passes import SCORABLE, OwnPasses, chunks
from .registry import register_method

ATTENTION_RULES = ("attnlrp", "cp")
#: module classes (by name) whose forward is made only of operations the rules cover
SUPPORTED = frozenset({
    "VisionTransformer", "VisionTransformerDistilled", "PatchEmbed", "Block", "Attention", "Mlp", "LayerScale",
    "DropPath", "Linear", "Conv2d", "LayerNorm", "GELU", "Dropout", "Identity", "ModuleList", "Sequential",
})
TOKEN_KINDS = ("patch-norm", "prototype")


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (the uniform rule,
    lxt's ``divide_gradient`` per channel)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class _IdentityRule(torch.autograd.Function):
    """``f(x)`` forward; backward ``grad * f(x) / (x + 1e-10)`` to ``x`` (lxt's ``identity_rule_implicit``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(fx / (x + 1e-10))
        return fx.view_as(fx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _LayerNormRule(torch.autograd.Function):
    """LayerNorm's output forward; backward as if the standard deviation were a constant (lxt 2.1
    ``layer_norm_forward``: ``(x - mean) / std.detach() * weight + bias``): the gradient
    ``g * weight``, centred over the channels, divided by ``std``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        ctx.save_for_backward((var + eps).sqrt(), weight)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        std, weight = ctx.saved_tensors
        g = grad if weight is None else grad * weight
        return (g - g.mean(dim=-1, keepdim=True)) / std, None, None, None


def _qkv_rule(attention: str, module: nn.Module, args: tuple, qkv: torch.Tensor) -> torch.Tensor:
    """The attention rule at ``attn.qkv``'s output ``[..., 3C]`` (q, k, v channels in this order)."""
    c = qkv.shape[-1] // 3
    if attention == "cp":
        return torch.cat([qkv[..., :2 * c].detach(), qkv[..., 2 * c:]], dim=-1)
    scale = torch.full((3 * c,), 0.25, dtype=qkv.dtype, device=qkv.device)
    scale[2 * c:] = 0.5
    return _ScaleGradient.apply(qkv, scale)


@contextmanager
def lrp_rules(model: nn.Module, attention: str = "attnlrp") -> Iterator[None]:
    """Forward hooks that give a ViT's backward the AttnLRP rules, removed on exit (also when the
    model raised). ``attention``: ``"attnlrp"`` (uniform rule: ``q``, ``k`` gradients / 4, ``v`` / 2)
    or ``"cp"`` (``q`` and ``k`` detached)."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.LayerNorm):
                handles.append(module.register_forward_hook(
                    lambda m, a, out: _LayerNormRule.apply(a[0], out.detach(), m.weight, m.eps)))
            elif isinstance(module, nn.GELU):
                handles.append(module.register_forward_hook(lambda m, a, out: _IdentityRule.apply(a[0], out.detach())))
            elif name.endswith("attn.qkv"):
                handles.append(module.register_forward_hook(partial(_qkv_rule, attention)))
        yield
    finally:
        for h in handles:
            h.remove()


def unsupported_modules(model: nn.Module) -> list[str]:
    """``"name (Class)"`` of the modules AttnLRP has no rule for (their forward is not covered)."""
    return [f"{n or 'the model'} ({type(m).__name__})" for n, m in model.named_modules()
            if type(m).__name__ not in SUPPORTED]


@register_method
class AttnLRP(Method):
    name = "attnlrp"
    normalization = "relu_minmax"  # signed relevance: positive evidence for the target
    in_default = False
    needs_own_passes = True
    cost = "1 forward + 1 backward per image of its own (LRP rules in the backward), batched"
    option_choices = {"attention": ATTENTION_RULES}

    def __init__(self, attention: str = "attnlrp", batch_size: int = 32):
        if attention not in ATTENTION_RULES:
            raise UsageError(f"attnlrp: attention must be one of {', '.join(ATTENTION_RULES)}, got {attention!r}")
        if batch_size < 1:
            raise UsageError(f"attnlrp: batch_size must be >= 1, got {batch_size}")
        self.attention, self.batch_size = attention, batch_size

    def check(self, model: nn.Module) -> None:
        adapter = adapter_for(model)
        if adapter.family != "vit" or not any(n.endswith("attn.qkv") for n, _ in model.named_modules()):
            raise NotApplicableError(f"attnlrp has rules for ViTs with timm / DINO blocks (attn.qkv); this is a "
                                     f"{adapter.family} model ({type(model).__name__})")
        missing = unsupported_modules(model)
        if missing:
            raise NotApplicableError(f"attnlrp has no LRP rule for {', '.join(missing[:4])}"
                                     + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        with lrp_rules(rec.model, self.attention):
            if passes.kind in SCORABLE:
                x = passes.inputs
                grad = torch.empty(x.shape, dtype=torch.float32, device=x.device)
                for lo, hi in chunks(x.shape[0], self.batch_size):
                    _, grad[lo:hi] = passes.gradients(x[lo:hi], torch.arange(lo, hi, device=x.device))
            elif passes.kind in TOKEN_KINDS:
                x, grad = passes.inputs, self._token_gradient(rec, passes)
            else:
                raise NotApplicableError(f"attnlrp explains a class logit, the CLS-output norm or a token target "
                                         f"({', '.join(SCORABLE + TOKEN_KINDS)}), not '{passes.kind}'")
        relevance = x.float() * grad
        return MapResult(self.name, relevance.sum(1), extras={"relevance": relevance},
                         info={"attention_rule": self.attention})

    def _token_gradient(self, rec: Recording, passes: OwnPasses) -> torch.Tensor:
        """Gradient ``[B, 3, H, W]`` of a token target (queries then support in one pass, as the shared pass)."""
        from .engine import token_target_scores

        adapter = adapter_for(rec.model)
        tokens: list[torch.Tensor] = []
        handle = rec.model.get_submodule(adapter.final_tokens()).register_forward_hook(
            lambda m, a, out: tokens.append(out))
        try:
            x = rec.inputs.detach().requires_grad_(True)
            with torch.enable_grad():
                rec.model(x)
                scores, _, _ = token_target_scores(tokens[0].float(), passes.kind, passes.inputs.shape[0],
                                                   prefix=adapter.prefix_tokens())
                (grad,) = torch.autograd.grad(scores.sum(), x)
        finally:
            handle.remove()
        passes.forward_images += x.shape[0]
        passes.backward_images += x.shape[0]
        return grad[:passes.inputs.shape[0]].float()
