"""LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via
Feature Formation Sensitivity", 2024): how sensitive each block's own class score is to its
attention, averaged over blocks.

For every block ``l`` (the last ``layers`` blocks; all by default), the block's score ``s^l`` is
the model's final norm and head applied to the mean of the block's output tokens (CLS and
prefix tokens included), ``s^l = head(norm(mean_t z^l_t))``; its gradient with respect to the
block's post-softmax attention ``A^l`` ``[B, heads, T, T]`` is ReLU'd and averaged over heads
and queries, and the prefix keys are dropped: ``m^l = mean_{h,q} relu(d s^l / d A^l)[:, :, :,
P:]``. The map is ``mean_l m^l`` on the patch grid (unnormalised; torchcam 0.5.0's
``LeGrad(model, blocks)(class_idx, normalized=False)``). Attention values are not multiplied
into the gradients.

Target: a class logit (or predicted class); a headless backbone's score is the norm of
``norm(mean_t z^l_t)`` (as its CLS-output norm). Distilled ViTs average their two heads.

Applies to ViTs whose attention can be read (the built-in ViT and its layouts, timm / DINO
ViTs), with ``norm`` and ``head`` modules.

Cost: 1 forward + 1 backward per image of its own (one short backward per block, from its score
to its attention: together about one full backward), batched ``batch_size`` images at a time.

Shapes: input ``B x 3 x H x W`` -> map ``B x h x w`` (patch grid).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError, UsageError
from ..models.adapters import adapter_for
from .base import AttentionMethod, MapResult, Recorder, Recording, tokens_to_grid
from .passes import OwnPasses, chunks
from .registry import register_method

ATTENTION_SUFFIX = ".attn.attn_drop"


def block_scores(model: nn.Module, tokens: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """``[B]``: the class score of intermediate tokens ``[B, T, C]`` (``head(norm(mean over tokens))``),
    the norm of ``norm(mean)`` for a headless model (``classes`` None)."""
    pooled = model.norm(tokens.mean(dim=1))
    pooled = getattr(model, "fc_norm", nn.Identity())(pooled)
    if classes is None:
        return pooled.norm(dim=-1)
    logits = model.head(pooled)
    if getattr(model, "distilled", False) and hasattr(model, "head_dist"):
        logits = (logits + model.head_dist(pooled)) / 2
    return logits.gather(1, classes[:, None])[:, 0]


@register_method
class LeGrad(AttentionMethod):
    name = "legrad"
    normalization = "minmax"  # a mean of ReLU'd gradients: non-negative
    in_default = False
    needs_attention = False  # its own pass reads the attention (the shared pass need not)
    needs_own_passes = True
    cost = "1 forward + 1 backward per image of its own (a short backward per block), batched"

    def __init__(self, layers: int | None = None, batch_size: int = 32):
        if layers is not None and layers < 1:
            raise UsageError(f"legrad: layers must be >= 1 (the last N blocks) or None (all), got {layers}")
        if batch_size < 1:
            raise UsageError(f"legrad: batch_size must be >= 1, got {batch_size}")
        self.layers, self.batch_size = layers, batch_size

    def check(self, model: nn.Module) -> None:
        super().check(model)
        if not all(isinstance(getattr(model, n, None), nn.Module) for n in ("norm", "head")):
            raise NotApplicableError("legrad scores each block with the model's final norm and head "
                                     f"(modules 'norm' and 'head'), which {type(model).__name__} does not have")
        if not all(n.endswith(ATTENTION_SUFFIX) for n, _ in adapter_for(model).attention_modules()):
            raise NotApplicableError("legrad needs blocks whose attention is read at 'attn.attn_drop' (timm / DINO)")

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        if passes.kind not in ("label", "predicted", "cls-norm"):
            raise NotApplicableError(f"legrad explains a class logit or the CLS-output norm, not '{passes.kind}'")
        model, x = rec.model, passes.inputs
        adapter = adapter_for(model)
        blocks = [n[:-len(ATTENTION_SUFFIX)] for n, _ in adapter.attention_modules()]
        blocks = blocks[-self.layers:] if self.layers else blocks
        prefix, grid = adapter.prefix_tokens(), adapter.grid(x.shape[-2], x.shape[-1])
        out = []
        for lo, hi in chunks(x.shape[0], self.batch_size):
            sub = Recording(model=model, inputs=x[lo:hi])
            classes = None if passes.classes is None else passes.classes[lo:hi]
            with Recorder(model, sub, attention=True, activations=blocks), torch.enable_grad(), passes.autocast():
                model(x[lo:hi].detach().requires_grad_(True))
            attention = {name[:-len(ATTENTION_SUFFIX)]: a for name, a in sub.attentions}
            with torch.enable_grad(), passes.autocast():
                per_block = []
                for i, block in enumerate(blocks):
                    score = block_scores(model, sub.activations[block], classes)
                    (grad,) = torch.autograd.grad(score.sum(), attention[block], retain_graph=i < len(blocks) - 1)
                    per_block.append(grad.float().relu().mean(dim=(1, 2))[:, prefix:])
            out.append(torch.stack(per_block, dim=1))
        passes.forward_images += x.shape[0]
        passes.backward_images += x.shape[0]
        per_layer = tokens_to_grid(torch.cat(out), grid)  # [B, L, h, w]
        return MapResult(self.name, per_layer.mean(1), extras={"per_layer": per_layer},
                         info={"blocks": blocks})
