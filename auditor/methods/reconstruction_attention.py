"""Dual reconstruction attention between a query image and its support images (few-shot).

As in the FewTURE fork's ``DualReconstruction`` (``models/reconstruction.py``): patch tokens
of the final features are L2-normalised (norm clamped at 1e-8), ``S = q s^T`` is their
cosine similarity, and a softmax over the other image's tokens gives the weights that
rebuild one image's tokens from the other's -- query from support ``softmax_s(S)`` ``[Lq, Ls]``
and support from query ``softmax_q(S^T)`` ``[Ls, Lq]``. Every row sums to 1, so row means
are constant; the map of an image is instead the attention *mass each of its tokens
receives* from the other image's tokens (column sums): for the query, averaged over the
support images. ``best_match`` is each query token's best-match weight: the largest weight
with which it is rebuilt from one support token (``max`` over a row of
``softmax_s(S)``), averaged over the support images -- high where a query token has a
clear counterpart in the support set.

Needs support images: ``compute_maps(model, x, [create_method("reconstruction_attention")],
support=s)`` with ``s`` ``[S, 3, H, W]``; the final tokens are read from the model's ``norm``.

Shapes: map and ``best_match`` ``B x h x w``; ``support_maps`` ``B x S x h x w``; ``query_from_support``
``B x S x Lq x Ls``; ``support_from_query`` ``B x S x Ls x Lq``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import MapResult, Method, Recording, token_grid, tokens_to_grid
from .registry import register_method


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)


@register_method
class ReconstructionAttention(Method):
    name = "reconstruction_attention"
    needs_support = True

    def check(self, model: nn.Module) -> None:
        if adapter_for(model).final_tokens() is None:
            raise NotApplicableError("the model has no final 'norm' layer to read its tokens from")

    def captured_layers(self, model: nn.Module) -> list[str]:
        return [adapter_for(model).final_tokens()]

    def compute(self, rec: Recording) -> MapResult:
        name = adapter_for(rec.model).final_tokens()
        tokens = rec.captured[name].detach().float()
        if tokens.ndim != 3:
            raise NotApplicableError(f"'{name}' gives {tuple(tokens.shape)}, not tokens [B, T, C]")
        grid, prefix = token_grid(rec.model, rec.inputs, tokens.shape[1])
        b = rec.num_queries
        query, support = _unit(tokens[:b, prefix:]), _unit(tokens[b:, prefix:])
        sim = torch.einsum("bqc,ksc->bkqs", query, support)
        query_from_support, support_from_query = sim.softmax(-1), sim.transpose(-1, -2).softmax(-1)
        query_map = support_from_query.sum(-2).mean(1)
        return MapResult(self.name, tokens_to_grid(query_map, grid),
                         extras={"support_maps": tokens_to_grid(query_from_support.sum(-2), grid),
                                 "best_match": tokens_to_grid(query_from_support.amax(-1).mean(1), grid),
                                 "query_from_support": query_from_support, "support_from_query": support_from_query},
                         info={"support_images": rec.num_support})
