"""Overlapping cross-attention of OCAB blocks (as in HAT, Chen et al., CVPR 2023), as the forward computed it.

Each OCAB block lets the queries of a ``w x w`` window attend to the keys of the larger
``W_ov x W_ov`` window around it (probabilities read from the block's ``attn_drop``). The
summary map of a block is the attention each token *receives*: for every key window, the
sum over its window's real queries, mean over heads, added up over all key windows the
token belongs to (windows overlap), at its grid position; the zero border and padding are
dropped.

Shapes: probabilities ``B*nW x heads x w^2 x W_ov^2`` per block -> map ``B x h x w`` (the
last block), ``per_layer`` ``B x L x h x w``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from ..models.multi_attention import window_partition
from .base import MapResult, Method, Recording, tokens_to_grid
from .registry import register_method


def ocab_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return adapter_for(model).cross_window_blocks()


def _layout(block: nn.Module, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid index (-1: padding / border) of each query slot ``[nW, w^2]`` and key slot ``[nW, W_ov^2]``."""
    ws = block.window_size
    index = torch.arange(grid[0] * grid[1], dtype=torch.float64).view(1, 1, *grid)
    hp, wp = (-(-g // ws) * ws for g in grid)
    queries = window_partition(F.pad(index, (0, wp - grid[1], 0, hp - grid[0]), value=-1.0).permute(0, 2, 3, 1), ws)
    keys, _ = block.key_windows(index, grid, pad_value=-1.0)
    return queries[..., 0].long(), keys[..., 0].long()


@register_method
class OcabAttention(Method):
    name = "ocab_attention"

    def check(self, model: nn.Module) -> None:
        if not ocab_blocks(model):
            raise NotApplicableError("the model has no OCAB (overlapping cross-attention) blocks")

    def captured_layers(self, model: nn.Module) -> list[str]:
        return [f"{name}.attn_drop" for name, _ in ocab_blocks(model)]

    def compute(self, rec: Recording) -> MapResult:
        grid = tuple(rec.model.grid_size_for(*rec.inputs.shape[-2:]))
        per_layer = []
        for name, block in ocab_blocks(rec.model):
            probs = rec.captured[f"{name}.attn_drop"].detach().float()
            queries, keys = (t.to(probs.device) for t in _layout(block, grid))
            probs = probs.reshape(-1, queries.shape[0], *probs.shape[1:])  # B x nW x heads x w^2 x W_ov^2
            received = torch.einsum("bwhqk,wq->bwk", probs, (queries >= 0).to(probs.dtype)) / probs.shape[2]
            valid = keys >= 0
            out = probs.new_zeros(probs.shape[0], grid[0] * grid[1])
            out.index_add_(1, keys[valid], received[:, valid])
            per_layer.append(tokens_to_grid(out, grid))
        per_layer = torch.stack(per_layer, dim=1)
        return MapResult(self.name, per_layer[:, -1], extras={"per_layer": per_layer},
                         info={"layer": ocab_blocks(rec.model)[-1][0]})
