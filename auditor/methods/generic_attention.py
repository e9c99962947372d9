"""Generic Attention explainability (Chefer, Gur & Wolf, "Generic Attention-model Explainability
for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021).

Each layer's attention ``A`` ``[B, heads, T, T]`` is weighted by its gradient, ``grad A = d
score / d A`` (the target's score, as every gradient method explains it), and only the positive
part is kept before the head mean: ``Ā = mean_h((grad A ⊙ A)^+)`` (the paper's rule 5). The
relevance starts as the identity and each layer, from the first, adds its own contribution:
``R <- R + Ā R`` (rule 6), so ``R = (I + Ā_L) ... (I + Ā_1)``. The map is the CLS row of ``R``
over the patches.

As the reference (hila-chefer/Transformer-MM-Explainability, ``Transformer_MM_explainability_ViT.ipynb``
``generate_relevance``: ``avg_heads`` + ``apply_self_attention_rules``) but per image of a batch and
without the matrix product: only the CLS row is needed, ``e_0 (I + Ā_L) ... (I + Ā_1)``, a row
vector times each layer from the last (float64), O(L T^2) per image.

Cost: the attention probabilities and their gradients are recorded in the shared forward and
backward (the one Grad-CAM uses); nothing else runs. Rollout runs over *all* tokens (CLS,
distillation, registers, patches); the map is read from the CLS row's patch columns only, so
prefix tokens never appear in it.

Shapes: attention and gradient ``B x heads x T x T`` per layer -> map ``B x h x w``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import NotApplicableError
from .base import AttentionMethod, MapResult, Recording, token_grid, tokens_to_grid
from .cam_base import SHARED_BACKWARD
from .registry import register_method


def cls_row_rollout(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """CLS row ``[B, T]`` (float64) of ``(I + M_L) ... (I + M_1)`` for per-layer ``M_l`` ``[B, T, T]`` in forward order.

    Both of Chefer's methods roll out this way: Generic Attention's ``R <- R + Ā R`` from
    ``R = I``, and Transformer Attribution's ``compute_rollout_attention`` (``M + I``, not
    row-normalised, multiplied from the first layer: ``(M_L + I) ... (M_1 + I)``).
    """
    b, t = layers[0].shape[0], layers[0].shape[-1]
    v = torch.zeros(b, 1, t, dtype=torch.float64, device=layers[0].device)
    v[:, 0, 0] = 1.0
    for m in reversed(layers):
        v = v + v @ m.double()
    return v[:, 0]


def positive_head_mean(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``mean_h((gradient ⊙ attention)^+)``: ``[B, heads, T, T]`` twice -> ``[B, T, T]`` (rule 5)."""
    return (gradient * attention).clamp(min=0).mean(1)


@register_method
class GenericAttention(AttentionMethod):
    """Generic Attention: per layer ``mean_h((grad A ⊙ A)^+)``, rolled out as ``R <- R + Ā R``; the CLS row."""

    name = "generic_attention"
    needs_attention_gradients = True
    cost = SHARED_BACKWARD
    in_default = False

    @staticmethod
    def attention_gradients(rec: Recording) -> list[torch.Tensor]:
        """``d score / d A`` per recorded attention; NotApplicableError when some were not recorded."""
        grads = rec.attention_gradients
        if len(grads) != len(rec.attentions) or any(g is None for g in grads):
            raise NotApplicableError("the gradients of the attention probabilities were not recorded (this model "
                                     "returns attention weights that are not on the path from input to score)")
        return grads

    def compute(self, rec: Recording) -> MapResult:
        attns = self.attentions(rec)
        grads = self.attention_gradients(rec)
        weighted = [positive_head_mean(a.detach(), g.detach().to(a.dtype)) for (_, a), g in zip(attns, grads)]
        row = cls_row_rollout(weighted)
        grid, prefix = token_grid(rec.model, rec.inputs, row.shape[-1])
        return MapResult(self.name, tokens_to_grid(row[:, prefix:].float(), grid), info={"layers": len(attns)})
