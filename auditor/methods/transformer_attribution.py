"""Transformer Attribution (Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention
Visualization", CVPR 2021).

The target's relevance is propagated from the logits down through the blocks by LRP
(:mod:`.lrp`: the reference's alpha-beta rule with alpha 1 for linear layers, the z-rule for
the attention products and the residual sums, LayerNorm / GELU / softmax passed through). At
each block, the relevance ``R_A`` of the attention probabilities is weighted by their gradient,
``Ā = mean_h((grad A ⊙ R_A)^+)``, and the layers are rolled out with the identity,
``(Ā_L + I) ... (Ā_s + I)`` (not row-normalised), from ``start_layer`` ``s`` (default 0, as
the reference). The map is the CLS row over the patches.

As the reference (hila-chefer/Transformer-Explainability, ``baselines/ViT/ViT_LRP.py``
``relprop(method="transformer_attribution")`` via ``ViT_explanation_generator.LRP.generate_LRP``):
the relevance starts as the one-hot of the target class at the logits (a linear head on the CLS
token; DeiT's two heads as one linear layer over CLS and distillation token). Targets without a
class head (``cls-norm`` of a headless backbone, ``patch-norm``, ``prototype``) start from
gradient x input of the score at the final tokens. Per image of a batch (the reference explains
one image).

Cost: no extra forward. The attention probabilities, their gradients and the blocks' inputs
are recorded in the shared forward + backward (the one Grad-CAM uses); the LRP sweep then
costs about two backward passes' arithmetic through the blocks above ``start_layer``
(the z+ rule's positive and negative matrix products). Prefix tokens (distillation, registers)
take part in the rollout; the map reads the CLS row's patch columns only.

Needs the timm / DINO block layout (``blocks.N.norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``), as the model adapter reports it.

Shapes: per layer ``B x heads x T x T`` -> map ``B x h x w``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import AttentionMethod, MapResult, Recording, token_grid, tokens_to_grid
from .generic_attention import GenericAttention, cls_row_rollout, positive_head_mean
from .lrp import BlockTensors, block_attention_relevance, heads_relevance
from .registry import register_method

#: target kinds whose relevance starts as a one-hot at the class head
CLASS_TARGETS = ("label", "predicted")


def _branch(modules: dict[str, nn.Module], block: str, scale: str, fallback: str) -> str:
    return f"{block}.{scale}" if f"{block}.{scale}" in modules else f"{block}.{fallback}"


@register_method
class TransformerAttribution(GenericAttention):
    """Transformer Attribution: per layer ``mean_h((grad A ⊙ R_A)^+)`` with LRP relevance ``R_A``, rolled out."""

    name = "transformer_attribution"
    cost = ("1 forward + 1 backward per batch, shared with every other gradient method, then an LRP sweep "
            "through the blocks (about 2 backward passes of arithmetic, no extra forward); under --amp a "
            "float32 forward + backward of its own")
    needs_float32 = True  # LRP's z-rule divisions amplify bfloat16 rounding: r 0.94 to float32 on a ViT-S/6

    def __init__(self, start_layer: int = 0):
        if start_layer < 0:
            raise ValueError(f"start_layer must be >= 0, got {start_layer}")
        self.start_layer = int(start_layer)

    def check(self, model: nn.Module) -> None:
        AttentionMethod.check(self, model)
        adapter = adapter_for(model)
        blocks = adapter.lrp_blocks()
        if not blocks or len(blocks) != len(adapter.attention_modules()):
            raise NotApplicableError(f"its LRP rules need ViT blocks in the timm / DINO layout (norm1, attn.qkv, "
                                     f"attn.proj, norm2, mlp.fc1, mlp.fc2); {type(model).__name__} "
                                     f"({adapter.family} layout) has none")
        if self.start_layer >= len(blocks):
            raise NotApplicableError(f"start_layer {self.start_layer} does not exist: the model has {len(blocks)} blocks")

    def activation_layers(self, model: nn.Module) -> list[str]:
        final = adapter_for(model).final_tokens()
        return [final] if final else []  # its gradient: the start relevance of non-class targets

    def captured_layers(self, model: nn.Module) -> list[str]:
        mods = adapter_for(model).modules()
        out = []
        for b in adapter_for(model).lrp_blocks():
            out += [b, f"{b}.attn.qkv", f"{b}.attn.proj", f"{b}.norm2", f"{b}.mlp.fc1", f"{b}.mlp.fc2",
                    _branch(mods, b, "ls1", "attn"), _branch(mods, b, "ls2", "mlp")]
        return out

    def _block_tensors(self, rec: Recording, mods: dict[str, nn.Module], b: str, attention: torch.Tensor) -> BlockTensors:
        out, inp = rec.captured, rec.captured_inputs
        d = lambda t: t.detach()  # noqa: E731
        return BlockTensors(x_in=d(inp[b]), attn_in=d(inp[f"{b}.attn.qkv"]), qkv=d(out[f"{b}.attn.qkv"]),
                            attention=d(attention), proj_in=d(inp[f"{b}.attn.proj"]),
                            attn_branch=d(out[_branch(mods, b, "ls1", "attn")]), x_mid=d(inp[f"{b}.norm2"]),
                            fc1_in=d(inp[f"{b}.mlp.fc1"]), fc2_in=d(inp[f"{b}.mlp.fc2"]),
                            mlp_branch=d(out[_branch(mods, b, "ls2", "mlp")]))

    def _start_relevance(self, rec: Recording, tokens: torch.Tensor) -> tuple[torch.Tensor, str]:
        """Relevance ``[B, T, C]`` of the final tokens, and how it was started."""
        adapter = adapter_for(rec.model)
        heads = adapter.class_heads()
        kind, classes = rec.target_info.get("kind"), rec.target_info.get("classes") or []
        if kind in CLASS_TARGETS and heads:
            mods = adapter.modules()
            one_hot = torch.zeros(tokens.shape[0], mods[heads[0][0]].out_features, dtype=tokens.dtype,
                                  device=tokens.device)
            one_hot[torch.arange(len(classes), device=tokens.device), torch.as_tensor(classes, device=tokens.device)] = 1.0
            return heads_relevance(tokens, [(mods[n], i, w) for n, i, w in heads], one_hot), "one-hot at the head"
        grad = rec.gradients.get(adapter.final_tokens())
        if grad is None:
            raise NotApplicableError(f"target '{kind}' does not reach the final tokens: no start relevance")
        return tokens * grad.detach().to(tokens.dtype), "gradient x input at the final tokens"

    def compute(self, rec: Recording) -> MapResult:
        attns = self.attentions(rec)
        grads = self.attention_gradients(rec)
        adapter = adapter_for(rec.model)
        mods, blocks = adapter.modules(), adapter.lrp_blocks()
        tokens = rec.activations.get(adapter.final_tokens() or "")
        if tokens is None or len(blocks) != len(attns):
            raise NotApplicableError("the final tokens or a block's tensors were not recorded")
        r, start = self._start_relevance(rec, tokens.detach())
        weighted = []
        for i in range(len(blocks) - 1, self.start_layer - 1, -1):  # from the top, as relprop
            t = self._block_tensors(rec, mods, blocks[i], attns[i][1])
            r_attn, r = block_attention_relevance(mods[blocks[i]], t, r, need_input=i > self.start_layer)
            weighted.append(positive_head_mean(r_attn, grads[i].detach().to(r_attn.dtype)))
        row = cls_row_rollout(weighted[::-1])
        grid, prefix = token_grid(rec.model, rec.inputs, row.shape[-1])
        return MapResult(self.name, tokens_to_grid(row[:, prefix:].float(), grid),
                         info={"layers": len(attns), "start_layer": self.start_layer, "start_relevance": start})
