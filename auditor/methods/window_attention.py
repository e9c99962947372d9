"""Window attention of MAB blocks (Swin-style W-MSA, Liu et al., ICCV 2021), as the forward computed it.

Each MAB block splits the (padded, on odd blocks cyclically shifted) token grid into
``w x w`` windows and computes attention probabilities ``A[window, head, query, key]``
inside each window (relative position bias and shift mask included); they are read from the
block's ``attn.softmax`` during the one forward pass. The summary map of a block is the
attention each token *receives*: ``sum`` over the real (non-padding) queries of its window,
mean over heads, placed at the token's original, unshifted grid position (padding removed).
A token's value is therefore the number of queries' worth of attention it draws; within a
window the values sum to the number of real queries.

Shapes: probabilities ``B*nW x heads x N x N`` per block -> map ``B x h x w`` (the chosen
block, default the last), ``per_layer`` ``B x L x h x w``, ``per_head`` ``B x heads x h x w``
(chosen block), ``probabilities.<i>`` ``B x nW x heads x N x N`` (block ``i``, raw).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import MapResult, Method, Recording, tokens_to_grid
from .registry import register_method


def mab_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return adapter_for(model).window_blocks()


def received_attention(probs: torch.Tensor, windows: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B*nW, heads, N, N]`` probabilities + ``[nW, N]`` token index (-1 = padding) -> ``[B, heads, h, w]``."""
    nw, n = windows.shape
    probs = probs.reshape(-1, nw, *probs.shape[1:])  # B x nW x heads x N x N
    valid = windows >= 0
    received = torch.einsum("bwhqk,wq->bhwk", probs, valid.to(probs.dtype))  # B x heads x nW x N (keys)
    out = probs.new_zeros(probs.shape[0], probs.shape[2], grid[0] * grid[1])
    out[..., windows[valid]] = received[..., valid]
    return tokens_to_grid(out, grid)


@register_method
class WindowAttentionMap(Method):
    name = "window_attention"

    def __init__(self, block: int = -1):
        self.block = block

    def check(self, model: nn.Module) -> None:
        if not mab_blocks(model):
            raise NotApplicableError("the model has no MAB (window attention) blocks")

    def captured_layers(self, model: nn.Module) -> list[str]:
        return [f"{name}.attn.softmax" for name, _ in mab_blocks(model)]

    def compute(self, rec: Recording) -> MapResult:
        blocks = mab_blocks(rec.model)
        if not -len(blocks) <= self.block < len(blocks):
            raise NotApplicableError(f"block {self.block} does not exist: the model has {len(blocks)} MAB blocks")
        grid = tuple(rec.model.grid_size_for(*rec.inputs.shape[-2:]))
        per_head, extras = [], {}
        for i, (name, block) in enumerate(blocks):
            probs = rec.captured[f"{name}.attn.softmax"].detach().float()
            windows = block.token_windows(grid).to(probs.device)
            per_head.append(received_attention(probs, windows, grid))
            extras[f"probabilities.{i}"] = probs.reshape(-1, windows.shape[0], *probs.shape[1:])
        per_layer = torch.stack([p.mean(1) for p in per_head], dim=1)
        chosen = self.block % len(blocks)
        extras.update(per_layer=per_layer, per_head=per_head[chosen])
        return MapResult(self.name, per_layer[:, chosen], extras=extras,
                         info={"layer": blocks[chosen][0], "window_size": blocks[chosen][1].window_size,
                               "shift": blocks[chosen][1].shift_size})
