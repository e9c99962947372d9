"""CLS-token attention: how much the CLS query attends to each patch (Caron et al., DINO 2021).

For layer ``l`` with post-softmax attention ``A[b, head, query, key]``, the map is
``A[b, :, 0, prefix:]`` reshaped to the patch grid, averaged over heads (or one head).

Shapes: attention ``B x heads x T x T`` -> map ``B x h x w``, ``per_head`` ``B x heads x h x w``,
``per_layer`` (head mean of every layer) ``B x L x h x w``.
"""

from __future__ import annotations

import torch

from ..errors import NotApplicableError
from .base import AttentionMethod, MapResult, Recording, token_grid, tokens_to_grid
from .registry import register_method


@register_method
class ClsAttention(AttentionMethod):
    name = "cls_attention"

    def __init__(self, layer: int = -1, head: int | None = None):
        self.layer, self.head = layer, head

    def compute(self, rec: Recording) -> MapResult:
        attns = self.attentions(rec)
        if not -len(attns) <= self.layer < len(attns):
            raise NotApplicableError(f"layer {self.layer} does not exist: the model has {len(attns)} attention layers")
        grid, prefix = token_grid(rec.model, rec.inputs, attns[0][1].shape[-1])
        cls_rows = torch.stack([a[:, :, 0, prefix:] for _, a in attns], dim=1).detach().float()  # B x L x heads x N
        layer_rows = cls_rows[:, self.layer]
        heads = layer_rows.shape[1]
        if self.head is not None and not -heads <= self.head < heads:
            raise NotApplicableError(f"head {self.head} does not exist: layer has {heads} heads")
        chosen = layer_rows.mean(1) if self.head is None else layer_rows[:, self.head]
        return MapResult(
            self.name,
            tokens_to_grid(chosen, grid),
            extras={"per_head": tokens_to_grid(layer_rows, grid), "per_layer": tokens_to_grid(cls_rows.mean(2), grid)},
            info={"layer": attns[self.layer][0], "head": "mean" if self.head is None else self.head},
        )
