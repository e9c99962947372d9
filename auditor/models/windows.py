"""Window layout of windowed attention (Swin, Liu et al., ICCV 2021): which token sits in which window slot.

A windowed-attention block splits its token grid ``h x w`` into ``wh x ww`` windows and computes
attention probabilities ``[B*nW, heads, N, N]`` (``N = wh * ww``) inside each window. Before the
partition the grid is padded (bottom / right) to multiples of the window and, on shifted blocks,
cyclically rolled by ``-shift``; implementations differ in the order:

* ``"pad_then_roll"``: the seed's MAB blocks and transformers' ``SwinLayer`` (pad, roll, partition);
* ``"roll_then_pad"``: timm's ``SwinTransformerBlock`` (roll the ``h x w`` grid, then pad).

:func:`token_windows` replays that bookkeeping on the token indices, so a probability's
``(window, slot)`` maps back to the token of the unshifted grid (the roll undone). Shifted blocks add
a mask (0 within a region of the padded grid, -100 across regions: :func:`shift_mask`), the same
for every implementation. Stages after the first merge 2 x 2 tokens (the grid halves, rounding up:
odd sides are padded), so a token of stage ``s`` covers ``2**s x 2**s`` cells of the patch grid
(:func:`to_patch_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ORDERS = ("pad_then_roll", "roll_then_pad")


@dataclass(frozen=True)
class WindowBlock:
    """One windowed-attention block as the forward ran it on one input size.

    Attributes:
        name: the block's module name.
        probs: the module whose forward output carries the block's probabilities
            ``[B*nW, heads, N, N]`` (read through the adapter's ``attention_probs``).
        grid: the block's token grid ``(h, w)``.
        stride: patch-grid cells per token along each side (``2**merges``; 1 without stages).
        patch_grid: the patch grid ``(H, W)`` of the input (the first stage's grid).
        windows: ``[nW, N]`` long: the row-major grid index of the token in each window slot, -1 for padding.
        mask: ``[nW, N, N]`` additive shift mask (0 / -100), or None (no shift).
        window_size: ``(wh, ww)``.
        shift: ``(sh, sw)``.
    """

    name: str
    probs: str
    grid: tuple[int, int]
    stride: int
    patch_grid: tuple[int, int]
    windows: torch.Tensor
    mask: torch.Tensor | None
    window_size: tuple[int, int]
    shift: tuple[int, int]


def _padded(grid: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    return -(-grid[0] // window[0]) * window[0], -(-grid[1] // window[1]) * window[1]


def partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``[H, W]`` (multiples of the window) -> ``[nW, wh*ww]``: windows row-major, slots row-major."""
    (h, w), (wh, ww) = x.shape, window
    return x.view(h // wh, wh, w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)


def token_windows(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int],
                  order: str = "pad_then_roll") -> torch.Tensor:
    """``[nW, wh*ww]`` long: the grid index (row-major over ``grid``) of each window slot's token, -1 for padding.

    >>> token_windows((2, 3), (2, 2), (0, 0)).tolist()
    [[0, 1, 3, 4], [2, -1, 5, -1]]
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    index = torch.arange(grid[0] * grid[1], dtype=torch.long).view(grid)
    hp, wp = _padded(grid, window)
    pad = lambda t: F.pad(t, (0, wp - grid[1], 0, hp - grid[0]), value=-1)  # noqa: E731
    roll = lambda t: torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(0, 1)) if any(shift) else t  # noqa: E731
    index = roll(pad(index)) if order == "pad_then_roll" else pad(roll(index))
    return partition(index, window)


def shift_mask(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor | None:
    """``[nW, N, N]``: 0 where query and key lie in the same region of the padded grid, -100 elsewhere;
    None without a shift. Regions per axis: ``[0, P - win)``, ``[P - win, P - shift)``, ``[P - shift, P)``."""
    if not any(shift):
        return None
    hp, wp = _padded(grid, window)
    rows = (torch.arange(hp) >= hp - window[0]).long() + (torch.arange(hp) >= hp - shift[0]).long()
    cols = (torch.arange(wp) >= wp - window[1]).long() + (torch.arange(wp) >= wp - shift[1]).long()
    labels = partition(rows[:, None] * 3 + cols[None, :], window)
    same = labels[:, None, :] == labels[:, :, None]
    return torch.where(same, 0.0, -100.0)


def stage_grids(patch_grid: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Token grid of each stage: the patch grid, then halved (rounding up) by each patch merging."""
    grids = [tuple(patch_grid)]
    for _ in range(stages - 1):
        grids.append((-(-grids[-1][0] // 2), -(-grids[-1][1] // 2)))
    return grids


def to_patch_grid(maps: torch.Tensor, stride: int, patch_grid: tuple[int, int]) -> torch.Tensor:
    """``[..., h, w]`` on a stage grid -> ``[..., H, W]`` on the patch grid: each token's value over the
    ``stride x stride`` patch cells it merged (cells past the patch grid, the merging's padding, dropped)."""
    if stride == 1:
        return maps
    up = maps.repeat_interleave(stride, dim=-2).repeat_interleave(stride, dim=-1)
    return up[..., :patch_grid[0], :patch_grid[1]]


__all__ = ["ORDERS", "WindowBlock", "partition", "shift_mask", "stage_grids", "to_patch_grid", "token_windows"]
