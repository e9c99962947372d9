"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Each layer's head-fused attention gets the residual connection as an identity,
``Â_l = 0.5 * A_l + 0.5 * I`` (rows still sum to 1), and the layers are multiplied from
the first: ``R = Â_L ... Â_2 Â_1``. The map is the CLS row of ``R`` over the patches.

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
        eye = torch.eye(t, dtype=torch.float64)
        result = None
        for _, a in attns:
            fused = _FUSIONS[self.head_fusion](a.detach().double())
            fused = 0.5 * fused + 0.5 * eye
            fused = fused / fused.sum(-1, keepdim=True)  # identity for mean; needed for max/min fusion
            result = fused if result is None else fused @ result
        return MapResult(self.name, tokens_to_grid(result[:, 0, prefix:].float(), grid),
                         info={"layers": len(attns), "head_fusion": self.head_fusion})
