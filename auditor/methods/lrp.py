"""LRP rules of Chefer et al. (CVPR 2021) for ViT blocks, as their reference code defines them.

hila-chefer/Transformer-Explainability, ``modules/layers_ours.py`` (commit c3e578f), run by
``baselines/ViT/ViT_LRP.py`` with ``alpha=1``:

* ``Linear``: the alpha-beta rule with alpha 1, beta 0 (z+ over signed inputs): with
  ``x+ / x-`` and ``W+ / W-`` the positive / negative parts and ``Z = x+ W+^T + x- W-^T``
  (no bias), ``R_in = x+ ⊙ (S W+) + x- ⊙ (S W-)``, ``S = R / Z``.
* ``LayerNorm``, ``GELU``, ``Softmax``, ``Dropout``: relevance passes unchanged. LayerScale
  (DINOv2), which the reference does not have, is treated the same way (for ``gamma > 0`` this
  equals folding it into the preceding linear layer).
* ``Add`` (residuals): the z-rule ``R_i = x_i ⊙ R / (x_1 + x_2)``, each part then rescaled so
  that the two parts share ``sum R`` in proportion to ``|sum R_i|`` -- per image here (the
  reference sums its whole batch, of one image). ``Clone`` (the residual fork): the two
  incoming relevances are summed through ``x ⊙ (R_1 / x + R_2 / x)``.
* the two attention products (``einsum``): the z-rule on ``A V`` and on ``Q K^T`` (unscaled),
  each of the two operands' relevances halved.
* every division through the reference's ``safe_divide`` (a stabiliser of +1e-9 whatever the
  sign, 0 where the denominator is 0), copied as is: results equal the reference's, and share
  its instability where a sum is near zero (compare float64 runs).

:func:`attention_relevance` runs these rules from the top of the model down to a given block
on tensors recorded in the shared forward: relevance ``[B, heads, T, T]`` of each block's
attention probabilities (the reference's ``get_attn_cam()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` as the reference's ``safe_divide``: ``a / (b + 1e-9)``, 0 where ``b == 0``.

    The reference computes ``den = b.clamp(min=1e-9) + b.clamp(max=1e-9)`` (which is exactly
    ``b + 1e-9``), adds 1e-9 where ``den == 0`` and multiplies by ``b != 0``; the same values in
    fewer passes over memory (the LRP sweep is bound by them on a CPU).
    """
    return (a / _stabilised(b)).masked_fill_(b == 0, 0.0)


def _stabilised(b: torch.Tensor) -> torch.Tensor:
    """``safe_divide``'s denominator: ``b + 1e-9``, and 1e-9 where that is 0."""
    den = b + 1e-9
    return den.masked_fill_(den == 0, 1e-9)


def linear_zplus(x: torch.Tensor, weight: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Alpha-beta (alpha 1, beta 0) relevance of a linear layer's input ``[..., in]`` from ``r`` ``[..., out]``.

    ``x+ ⊙ (S W+) + x- ⊙ (S W-)`` is computed as ``x ⊙ (S W+ where x > 0 else S W-)`` (the same values).
    """
    weight = weight.detach().to(x.dtype)
    pw, nw = weight.clamp(min=0), weight.clamp(max=0)
    s = safe_divide(r, F.linear(x.clamp(min=0), pw) + F.linear(x.clamp(max=0), nw))
    return x * torch.where(x > 0, s @ pw, s @ nw)


def add_split(x0: torch.Tensor, x1: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance of the two summands of ``x0 + x1`` ``[B, ...]`` (the reference's ``Add``, per image)."""
    s = safe_divide(r, x0 + x1)
    a, b = x0 * s, x1 * s
    dims = tuple(range(1, r.ndim))
    a_sum, b_sum, r_sum = a.sum(dims, keepdim=True), b.sum(dims, keepdim=True), r.sum(dims, keepdim=True)
    total = a_sum.abs() + b_sum.abs()
    a_fact = safe_divide(a_sum.abs(), total) * r_sum
    b_fact = safe_divide(b_sum.abs(), total) * r_sum
    return a * safe_divide(a_fact, a_sum), b * safe_divide(b_fact, b_sum)


def clone_merge(x: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """Relevance of ``x`` used twice (the reference's ``Clone``: ``x ⊙ (safe_divide(r0, x) + safe_divide(r1, x))``)."""
    den = _stabilised(x)
    return x * (r0 / den + r1 / den).masked_fill_(x == 0, 0.0)


def product_split(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Halved z-rule relevances of both operands of ``a @ b`` (``[..., i, j]``, ``[..., j, d]``)."""
    s = safe_divide(r, a @ b)
    return a * (s @ b.transpose(-1, -2)) / 2, b * (a.transpose(-1, -2) @ s) / 2


@dataclass
class BlockTensors:
    """What one block recorded in the forward (all ``[B, T, ·]``; ``attention`` ``[B, heads, T, T]``)."""

    x_in: torch.Tensor  # block input
    attn_in: torch.Tensor  # norm1 output (qkv input)
    qkv: torch.Tensor  # qkv output [B, T, 3C]
    attention: torch.Tensor
    proj_in: torch.Tensor  # heads merged, before proj
    attn_branch: torch.Tensor  # ls1(attn(.)) output
    x_mid: torch.Tensor  # x_in + attn_branch (norm2 input)
    fc1_in: torch.Tensor
    fc2_in: torch.Tensor
    mlp_branch: torch.Tensor  # ls2(mlp(.)) output


def block_attention_relevance(block: nn.Module, t: BlockTensors, r: torch.Tensor,
                              need_input: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(relevance of the attention [B, heads, T, T], relevance of the block input [B, T, C] or None)``
    from the relevance ``r`` ``[B, T, C]`` of the block output (``ViT_LRP.Block.relprop``)."""
    r_res, r_mlp = add_split(t.x_mid, t.mlp_branch, r)
    r_mlp = linear_zplus(t.fc1_in, block.mlp.fc1.weight, linear_zplus(t.fc2_in, block.mlp.fc2.weight, r_mlp))
    r = clone_merge(t.x_mid, r_res, r_mlp)
    r_res, r_attn = add_split(t.x_in, t.attn_branch, r)
    heads = t.attention.shape[1]
    b, n, c = t.proj_in.shape
    r_out = linear_zplus(t.proj_in, block.attn.proj.weight, r_attn).reshape(b, n, heads, c // heads).transpose(1, 2)
    q, k, v = t.qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    r_probs, r_v = product_split(t.attention, v, r_out)
    if not need_input:
        return r_probs, None
    r_q, r_kt = product_split(q, k.transpose(-1, -2), r_probs)
    r_qkv = torch.stack([r_q, r_kt.transpose(-1, -2), r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * c)
    return r_probs, clone_merge(t.x_in, r_res, linear_zplus(t.attn_in, block.attn.qkv.weight, r_qkv))


def heads_relevance(tokens: torch.Tensor, heads: list[tuple[nn.Linear, int, float]], one_hot: torch.Tensor) -> torch.Tensor:
    """Relevance ``[B, T, C]`` of the final tokens from a one-hot ``[B, classes]`` at the logits.

    ``heads``: ``(linear, token index, weight)``; the logits are ``sum_k weight_k head_k(tokens[:, index_k])``,
    taken as ONE linear layer over the concatenated tokens (z+ rule, ``ViT_LRP.Linear``), then
    the reference's ``IndexSelect`` rule back to the tokens.
    """
    idx = [i for _, i, _ in heads]
    picked = tokens[:, idx].flatten(1)
    weight = torch.cat([w * h.weight.detach().to(tokens.dtype) for h, _, w in heads], dim=1)
    r_picked = linear_zplus(picked, weight, one_hot.to(tokens.dtype)).reshape(tokens.shape[0], len(idx), -1)
    r = torch.zeros_like(tokens)
    r[:, idx] = tokens[:, idx] * safe_divide(r_picked, tokens[:, idx])
    return r
