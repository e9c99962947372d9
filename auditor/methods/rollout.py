"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Each layer's head-fused attention gets the residual connection as an identity,
``Â_l = 0.5 * A_l + 0.5 * I`` (rows still sum to 1), and the layers are multiplied from
the first: ``R = Â_L ... Â_2 Â_1``. The map is the CLS row of ``R`` over the patches,
computed as ``e_0 Â_L ... Â_1``: vector-matrix products on the attention's device, O(L T^2)
per image (with mean fusion the head mean is taken after the product, which is linear).

``head_fusion`` (``mean`` | ``max`` | ``min``) fuses the heads; ``discard_ratio`` (in
``[0, 1)``, default 0) sets the smallest ``int(T^2 * discard_ratio)`` entries of each image's
fused attention to zero before the identity is added (never the CLS-to-CLS entry), as in
jacobgil's ``vit-explain`` (there for the first image of a batch only; here per image).

Rollout runs over *all* tokens (CLS, distillation, registers, patches): every token carries
attention between layers. The map is read from the CLS row's patch columns only, so prefix
tokens (registers, the distillation token) never appear in it.

Shapes: attention ``B x heads x T x T`` per layer -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .base import AttentionMethod, MapResult, Recording, token_grid, tokens_to_grid
from .registry import register_method

_FUSIONS = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}


def _discard(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """``[B, T, T]`` with each image's ``int(T^2 * ratio)`` smallest entries set to 0, except entry (0, 0)."""
    if not ratio:
        return fused
    flat = fused.reshape(fused.shape[0], -1).clone()
    idx = flat.topk(int(flat.shape[1] * ratio), dim=1, largest=False).indices
    flat.scatter_(1, idx, torch.where(idx == 0, flat.gather(1, idx), torch.zeros((), dtype=flat.dtype)))
    return flat.view_as(fused)


@register_method
class Rollout(AttentionMethod):
    name = "rollout"

    option_choices = {"head_fusion": tuple(_FUSIONS)}

    def __init__(self, head_fusion: str = "mean", discard_ratio: float = 0.0):
        if head_fusion not in _FUSIONS:
            raise ValueError(f"head_fusion must be one of {sorted(_FUSIONS)}, got {head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
        self.head_fusion, self.discard_ratio = head_fusion, float(discard_ratio)

    def compute(self, rec: Recording) -> MapResult:
        attns = self.attentions(rec)
        t = attns[0][1].shape[-1]
        grid, prefix = token_grid(rec.model, rec.inputs, t)
        # Only the CLS row of R is needed: v = e_0 Â_L ... Â_1, a row vector times each layer
        # from the last -- O(L T^2) per image instead of the O(L T^3) of multiplying matrices.
        # With mean fusion the head mean is linear, so v Â = 0.5 mean_h(v A_h) + 0.5 v (with
        # the row normalisation D^-1 applied to v first): one read of each attention tensor.
        b = attns[0][1].shape[0]
        v = torch.zeros(b, t, dtype=torch.float64, device=attns[0][1].device)
        v[:, 0] = 1.0
        for _, a in reversed(attns):
            a = a.detach().float()
            if self.head_fusion == "mean" and not self.discard_ratio:
                w = (v / (0.5 * a.sum(-1).mean(1, dtype=torch.float64) + 0.5)).float()  # rows of Â sum to 1
                v = 0.5 * (w[:, None, None, :] @ a)[:, :, 0].mean(1, dtype=torch.float64) + 0.5 * w.double()
            else:
                fused = 0.5 * _discard(_FUSIONS[self.head_fusion](a).double(), self.discard_ratio)
                fused.diagonal(dim1=-2, dim2=-1).add_(0.5)
                v = (v[:, None, :] @ (fused / fused.sum(-1, keepdim=True)))[:, 0]
        row = v[:, None, :]
        return MapResult(self.name, tokens_to_grid(row[:, 0, prefix:].float(), grid),
                         info={"layers": len(attns), "head_fusion": self.head_fusion,
                               "discard_ratio": self.discard_ratio})
