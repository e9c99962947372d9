"""Window attention of MAB blocks (Swin-style W-MSA, Liu et al., ICCV 2021), as the forward computed it.

Each MAB block splits the (padded, on odd blocks cyclically shifted) token grid into
``w x w`` windows and computes attention probabilities ``A[window, head, query, key]``
inside each window (relative position bias and shift mask included); they are read from the
block's ``attn.softmax`` during the one forward pass.

What is evidence here: every query's probabilities sum to 1 inside its own window, so the
attention a token *receives* (summed over its window's real queries) always adds up to the
window's number of queries -- the same for every full window, whatever the model looks at.
Raw received attention is therefore flat at the window level (a box's relevance mass is
about its share of the image). The map scores instead the attention received *in excess of
the uniform share*: ``(received - uniform) / uniform``, where ``uniform`` is what the token
would receive if every query spread its attention equally over the keys it may see (the
shift mask respected; padding keys count, as the model does not mask them). 0 means "as much
as chance", positive "drawn to", negative "avoided"; the method's post-processing keeps the
positive part (``relu_minmax``), so a window that attends uniformly contributes nothing and
a model whose windows all attend uniformly gives a constant map (flagged, not scored).
Evidence only compares tokens of the same window: window attention cannot say that one
window matters more than another.

Shapes: probabilities ``B*nW x heads x N x N`` per block -> map ``B x h x w`` (the chosen
block, default the last, mean over heads), ``per_layer`` ``B x L x h x w``, ``per_head``
``B x heads x h x w`` (chosen block), ``received`` ``B x L x h x w`` (raw received attention,
mean over heads), ``probabilities.<i>`` ``B x nW x heads x N x N`` (block ``i``, raw).
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
    """``[B*nW, heads, N, N]`` probabilities + ``[nW, N]`` token index (-1 = padding) -> ``[B, heads, h, w]``:
    the attention each token receives from the real queries of its window."""
    nw, n = windows.shape
    probs = probs.reshape(-1, nw, *probs.shape[1:])  # B x nW x heads x N x N
    valid = windows >= 0
    received = torch.einsum("bwhqk,wq->bhwk", probs, valid.to(probs.dtype))  # B x heads x nW x N (keys)
    out = probs.new_zeros(probs.shape[0], probs.shape[2], grid[0] * grid[1])
    out[..., windows[valid]] = received[..., valid]
    return tokens_to_grid(out, grid)


def uniform_share(windows: torch.Tensor, grid: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
    """``[h, w]``: what each token would receive if every query attended equally to the keys it may see.

    ``mask``: the block's shift mask ``[nW, N, N]`` (0 / -100) or None; the uniform
    probabilities are ``softmax(mask)`` per query, as the model's own softmax of equal scores.
    """
    nw, n = windows.shape
    scores = torch.zeros(nw, n, n, device=windows.device) if mask is None else mask.float()
    uniform = torch.softmax(scores, dim=-1)[:, None]  # nW x 1 head x N x N: one image
    return received_attention(uniform, windows, grid)[0, 0]


def excess_attention(received: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """``(received - share) / share``: attention received beyond the uniform share, in units of it."""
    return (received - share) / share


@register_method
class WindowAttentionMap(Method):
    name = "window_attention"
    normalization = "relu_minmax"  # the evidence is attention beyond the uniform share: its positive part

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
        per_head, raw, extras = [], [], {}
        for i, (name, block) in enumerate(blocks):
            probs = rec.captured[f"{name}.attn.softmax"].detach().float()
            windows = block.token_windows(grid).to(probs.device)
            received = received_attention(probs, windows, grid)
            share = uniform_share(windows, grid, block.attention_mask(grid, probs.device))
            per_head.append(excess_attention(received, share))
            raw.append(received.mean(1))
            extras[f"probabilities.{i}"] = probs.reshape(-1, windows.shape[0], *probs.shape[1:])
        per_layer = torch.stack([p.mean(1) for p in per_head], dim=1)
        chosen = self.block % len(blocks)
        extras.update(per_layer=per_layer, per_head=per_head[chosen], received=torch.stack(raw, dim=1))
        return MapResult(self.name, per_layer[:, chosen], extras=extras,
                         info={"layer": blocks[chosen][0], "window_size": blocks[chosen][1].window_size,
                               "shift": blocks[chosen][1].shift_size})
