"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Each layer's head-fused attention gets the residual connection as an identity,
``Â_l = 0.5 * A_l + 0.5 * I`` (rows still sum to 1), and the layers are multiplied from
the first: ``R = Â_L ... Â_2 Â_1``. The map is the CLS row of ``R`` over the patches,
computed as ``e_0 Â_L ... Â_1``: vector-matrix products on the attention's device, O(L T^2)
per image (with mean fusion the head mean is taken after the product, which is linear).

Shapes: attention ``B x heads x T x T`` per layer -> map ``B x h x w``.
"""

from __future__ import annotations

import torch

from .base import AttentionMethod, MapResult, Recording, token_grid, tokens_to_grid
from .registry import register_method

_FUSIONS = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}


@register_method
class Rollout(AttentionMethod):
    name = "rollout"

    def __init__(self, head_fusion: str = "mean"):
        if head_fusion not in _FUSIONS:
            raise ValueError(f"head_fusion must be one of {sorted(_FUSIONS)}, got {head_fusion!r}")
        self.head_fusion = head_fusion

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
            if self.head_fusion == "mean":
                w = (v / (0.5 * a.sum(-1).mean(1, dtype=torch.float64) + 0.5)).float()  # rows of Â sum to 1
                v = 0.5 * (w[:, None, None, :] @ a)[:, :, 0].mean(1, dtype=torch.float64) + 0.5 * w.double()
            else:
                fused = 0.5 * _FUSIONS[self.head_fusion](a).double()
                fused.diagonal(dim1=-2, dim2=-1).add_(0.5)
                v = (v[:, None, :] @ (fused / fused.sum(-1, keepdim=True)))[:, 0]
        row = v[:, None, :]
        return MapResult(self.name, tokens_to_grid(row[:, 0, prefix:].float(), grid),
                         info={"layers": len(attns), "head_fusion": self.head_fusion})
