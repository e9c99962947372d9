"""Window attention (Swin-style W-MSA, Liu et al., ICCV 2021), as the forward computed it.

Serves every windowed-attention layout the model's adapter describes
(:meth:`~auditor.models.adapters.ModelAdapter.window_layout`): the seed's MAB blocks, timm's
``SwinTransformer`` and transformers' Swin. Each block splits its (padded, on shifted blocks
cyclically rolled) token grid into windows and computes attention probabilities
``A[window, head, query, key]`` inside each window (relative position bias and shift mask
included); they are read from the module the adapter names during the one forward pass, and
each window slot is mapped back to its token of the unshifted grid (the roll undone, padding
dropped) by the adapter's window layout.

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

Stages (Swin): each block's map is computed on its own stage's grid, then brought to the patch
grid (the first stage's) by giving every merged token's value to the ``2**s x 2**s`` patches it
covers (:func:`~auditor.models.windows.to_patch_grid`), so the blocks of all stages line up.

Shapes: probabilities ``B*nW x heads x N x N`` per block -> map ``B x H x W`` on the patch grid
(the chosen block, default the last, mean over heads), ``per_layer`` ``B x L x H x W``,
``per_head`` ``B x heads x H x W`` (chosen block), ``received`` ``B x L x H x W`` (raw received
attention, mean over heads), ``probabilities.<i>`` ``B x nW x heads x N x N`` (block ``i``, raw).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from ..models.windows import WindowBlock, to_patch_grid
from .base import MapResult, Method, Recording, tokens_to_grid
from .registry import register_method


def window_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
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


def block_maps(probs: torch.Tensor, block: WindowBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's probabilities ``[B*nW, heads, N, N]`` -> (excess attention ``[B, heads, H, W]``,
    raw received attention mean over heads ``[B, H, W]``), both on the patch grid."""
    windows = block.windows.to(probs.device)
    received = received_attention(probs, windows, block.grid)
    share = uniform_share(windows, block.grid, None if block.mask is None else block.mask.to(probs.device))
    return (to_patch_grid(excess_attention(received, share), block.stride, block.patch_grid),
            to_patch_grid(received.mean(1), block.stride, block.patch_grid))


@register_method
class WindowAttentionMap(Method):
    name = "window_attention"
    normalization = "relu_minmax"  # the evidence is attention beyond the uniform share: its positive part
    needs_unfused_attention = True  # timm Swin: the probabilities exist on the explicit path only

    def __init__(self, block: int = -1):
        self.block = block

    def check(self, model: nn.Module) -> None:
        if not window_blocks(model):
            raise NotApplicableError("the model has no MAB or Swin window-attention blocks")

    def captured_layers(self, model: nn.Module) -> list[str]:
        adapter = adapter_for(model)
        return [adapter.window_probs(name) for name, _ in adapter.window_blocks()]

    def compute(self, rec: Recording) -> MapResult:
        adapter = adapter_for(rec.model)
        blocks = adapter.window_layout(*rec.inputs.shape[-2:])
        if not -len(blocks) <= self.block < len(blocks):
            raise NotApplicableError(f"block {self.block} does not exist: the model has {len(blocks)} window blocks")
        per_head, raw, extras = [], [], {}
        for i, blk in enumerate(blocks):
            probs = adapter.attention_probs(rec.captured_outputs[blk.probs])
            if probs is None:
                raise NotApplicableError(f"{blk.probs} returned no attention probabilities")
            probs = probs.detach().float()
            excess, received = block_maps(probs, blk)
            per_head.append(excess)
            raw.append(received)
            extras[f"probabilities.{i}"] = probs.reshape(-1, blk.windows.shape[0], *probs.shape[1:])
        per_layer = torch.stack([p.mean(1) for p in per_head], dim=1)
        chosen = self.block % len(blocks)
        extras.update(per_layer=per_layer, per_head=per_head[chosen], received=torch.stack(raw, dim=1))
        blk = blocks[chosen]
        side = lambda t: t[0] if t[0] == t[1] else list(t)  # noqa: E731
        return MapResult(self.name, per_layer[:, chosen], extras=extras,
                         info={"layer": blk.name, "window_size": side(blk.window_size), "shift": side(blk.shift),
                               "grid": list(blk.grid), "stride": blk.stride})
