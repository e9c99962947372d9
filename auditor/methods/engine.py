"""One pass for every requested method: one forward, at most one backward.

:func:`compute_maps` registers the hooks all methods need (:class:`~.base.Recorder`), runs
the model once on the batch, and -- only if a gradient method was asked for -- takes the
gradients of the batch's target scores with respect to the recorded layers (and, for
Generic Attention / Transformer Attribution, every recorded attention probability tensor) in a
single ``torch.autograd.grad`` call (parameter ``.grad`` fields are left untouched). When only
layer gradients are asked for (the CAM family), autograd records the forward from the first of
those layers on (:func:`_late_gradient_layers`): a last-block Grad-CAM of ViT-S/16 at batch 16
peaks at 0.5 GB instead of 1.6 GB, the maps bit for bit the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import NotApplicableError, UsageError
from ..models.adapters import FINAL_TOKENS, adapter_for  # noqa: F401  (FINAL_TOKENS: re-exported)
from .base import AUTO_FEATURE_MAP, MapResult, Method, Recorder, Recording, cls_bypass_reason
from .passes import OwnPasses

TargetSpec = None | str | Sequence[int] | torch.Tensor
TOKEN_TARGETS = ("patch-norm", "prototype")


def _is_token_target(target: Any) -> bool:
    """A named token target, or an object with ``token_scores(tokens, num_queries, prefix)`` and
    ``kind`` (a few-shot classifier's logit, :class:`auditor.few_shot.ClassLogitTarget`)."""
    return (isinstance(target, str) and target in TOKEN_TARGETS) or hasattr(target, "token_scores")


@dataclass
class PassResult:
    """Maps of every method that applied, reasons for those that did not, and the output.

    ``targets`` holds each image's target class (``None`` for a non-class target such as
    the CLS-token norm); ``target_kind`` says which kind of target was used. With a token
    target (``"patch-norm"``, ``"prototype"``), ``info["mean_patch_tokens"]`` is the mean
    final patch token ``[B + S, C]`` of the queries then the support images (few-shot
    prototypes and nearest-prototype predictions come from it, at no extra cost). With a
    classifier target (``token_scores``, :mod:`auditor.few_shot`), ``info["patch_tokens"]`` is
    the queries' final patch tokens ``[B, N, C]`` too (the episode's decision reads them).
    """

    maps: dict[str, MapResult]
    skipped: dict[str, str]
    output: torch.Tensor
    targets: list[int | None]
    target_kind: str
    info: dict[str, Any] = field(default_factory=dict)


def is_headless(model: nn.Module) -> bool:
    """True for backbones without a class head, as the model's adapter says (timm / DINO: ``num_classes == 0``)."""
    return adapter_for(model).headless()


def target_scores(model: nn.Module, output: torch.Tensor, target: TargetSpec) -> tuple[torch.Tensor, list[int | None], str]:
    """Per-image scalar scores ``[B]`` to explain, the target classes, and the kind of target.

    ``target``: ``None`` (the predicted class, or the CLS-output norm for a headless
    backbone), ``"predicted"``, ``"cls-norm"``, or one class index per image (an image
    without one is an error, never its predicted class). An audit resolves its targets
    once, by class name, in :mod:`auditor.target`.
    """
    if output.ndim != 2:
        raise UsageError(f"the model returned shape {tuple(output.shape)}; expected [batch, classes] or [batch, features]")
    b = output.shape[0]
    if target == "cls-norm" or (target is None and is_headless(model)):
        return output.norm(dim=-1), [None] * b, "cls-norm"
    if target is None or target == "predicted":
        idx = output.argmax(-1)
        kind = "predicted"
    elif isinstance(target, str):
        raise UsageError(f"unknown target '{target}': use 'predicted', 'cls-norm' or class indices")
    else:
        if isinstance(target, torch.Tensor):
            target = target.tolist()
        if any(t is None for t in target):  # never a silent switch to the predicted class
            raise UsageError("a target class is missing for some image: give one class index per image, "
                             "or target 'predicted'")
        idx = torch.as_tensor(list(target), dtype=torch.long, device=output.device)
        if idx.shape != (b,):
            raise UsageError(f"need one target class per image ({b}), got {tuple(idx.shape)}")
        if is_headless(model):
            raise UsageError("this backbone has no class head: use target 'cls-norm' (or a prototype target)")
        if (idx < 0).any() or (idx >= output.shape[1]).any():
            raise UsageError(f"target class out of range: the model has {output.shape[1]} classes, got {idx.tolist()}")
        kind = "label"
    return output.gather(1, idx[:, None])[:, 0], idx.tolist(), kind


def mean_patch_tokens(tokens: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """``[B, C]``: each image's mean patch token, from tokens ``[B, P + N, C]``."""
    return tokens[:, prefix:].mean(1)


def token_target_scores(tokens: torch.Tensor, target: TargetSpec, num_queries: int, *,
                        prefix: int = 1) -> tuple[torch.Tensor, list[None], str]:
    """Scores ``[B]`` from the final tokens ``[B + S, P + N, C]`` of queries then support images.

    ``"patch-norm"``: the norm of the image's mean patch token. ``"prototype"``: the cosine
    similarity between the image's mean patch token and the prototype of its class, the mean
    of the support images' mean patch tokens (all support images are of the query's class).
    """
    means = mean_patch_tokens(tokens, prefix)
    if target == "patch-norm":
        return means[:num_queries].norm(dim=-1), [None] * num_queries, "patch-norm"
    if means.shape[0] == num_queries:
        raise UsageError("target 'prototype' needs support images (compute_maps(..., support=...), CLI --support)")
    proto = means[num_queries:].mean(0, keepdim=True)
    return torch.nn.functional.cosine_similarity(means[:num_queries], proto, dim=-1), [None] * num_queries, "prototype"


def _pass_target(model: nn.Module, target: TargetSpec, has_support: bool) -> TargetSpec:
    """The target to use: CLS-bypassing models never use the CLS token (their default is a token target)."""
    reason = cls_bypass_reason(model)
    if reason is None:
        return target
    if target is None:
        return "prototype" if has_support else "patch-norm"
    if _is_token_target(target):
        return target
    raise UsageError(f"target {target!r} reads the CLS token, but {reason}; use target 'patch-norm' or 'prototype' "
                     "(with support images)")


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of ``--amp``: float16 on CUDA, bfloat16 elsewhere (CPU autocast's type)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _upcast(rec: Recording) -> None:
    """Recorded tensors back to float32 so that methods compute maps at full precision."""
    f = lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
    rec.attentions = [(n, f(a)) for n, a in rec.attentions]
    rec.attention_gradients = [f(g) for g in rec.attention_gradients]
    for d in (rec.activations, rec.gradients, rec.captured, rec.captured_inputs):
        d.update({k: f(v) for k, v in d.items()})
    rec.input_gradient = f(rec.input_gradient)


def compute_maps(model: nn.Module, inputs: torch.Tensor, methods: Sequence[Method], *,
                 target: TargetSpec = None, support: torch.Tensor | None = None, amp: bool = False) -> PassResult:
    """Run every method on a batch ``inputs`` ``[B, 3, H, W]`` in one pass.

    Returns raw maps ``[B, h, w]`` per method (on the CPU). A method that does not apply is
    listed in ``skipped`` with its reason instead of failing the others.

    ``support`` ``[S, 3, H, W]``: few-shot support images (all of one class), run in the same
    forward after ``inputs``; maps are returned for ``inputs`` only. Methods with
    ``needs_support`` (e.g. ``reconstruction_attention``) use them, and so does
    ``target="prototype"``. Models whose CLS token bypasses the blocks (MAB / OCAB) default
    to ``"patch-norm"``, or ``"prototype"`` when support images are given.

    Methods with ``needs_own_passes`` (Score-CAM, integrated gradients, ...) run their own
    batched passes afterwards (:mod:`.passes`), after the shared one.

    ``amp``: run the forward under ``torch.autocast`` (:func:`amp_dtype`); the recorded
    tensors are cast back to float32 before the methods read them.
    """
    if amp and any(m.needs_float32 for m in methods):
        return _float32_apart(model, inputs, methods, target=target, support=support)
    skipped: dict[str, str] = {}
    active: list[Method] = []
    for m in methods:
        try:
            m.check(model)
            if m.needs_support and support is None:
                raise NotApplicableError("it needs support images: pass support= (CLI: --support IMAGE ...)")
            active.append(m)
        except NotApplicableError as e:
            skipped[m.name] = str(e)
    target = _pass_target(model, target, support is not None)
    token_target = _is_token_target(target)
    need_attn_grad = any(m.needs_attention_gradients for m in active)
    need_attn = need_attn_grad or any(m.needs_attention for m in active)
    need_input_grad = any(m.needs_input_gradient for m in active)
    grad_methods = [m for m in active if m.needs_gradients or m.needs_input_gradient or m.needs_attention_gradients]
    layers = sorted({name for m in active for name in m.activation_layers(model)})  # eigencam: no gradient
    captures = {name for m in active for name in m.captured_layers(model)}
    adapter = adapter_for(model)
    final_tokens = adapter.final_tokens()
    if token_target and final_tokens is None:
        raise UsageError(f"target {target!r} reads the model's final tokens, but {type(model).__name__} "
                         f"({adapter.family} layout) has no token output")
    captures = sorted(captures | {final_tokens} if token_target else captures)
    b = inputs.shape[0]
    batch = inputs if support is None else torch.cat([inputs, support.to(inputs.device, inputs.dtype)])
    rec = Recording(model=model, inputs=batch, num_queries=b)
    model.eval()
    unfused = any(m.needs_unfused_attention for m in active)
    grad_from = _late_gradient_layers(active, model, need_input_grad or need_attn_grad)
    with Recorder(model, rec, attention=need_attn, activations=layers, captures=captures, unfused=unfused,
                  grad_from=grad_from), torch.set_grad_enabled(bool(grad_methods) and not grad_from):
        x = batch.detach().requires_grad_(True) if grad_methods and not grad_from else batch
        with torch.autocast(batch.device.type, dtype=amp_dtype(batch.device), enabled=amp):
            output = model(x)
        rec.output = output = (output[0] if isinstance(output, (tuple, list)) else output).float()
        info: dict[str, Any] = {}
        if token_target:
            prefix = adapter.prefix_tokens()
            tokens = rec.captured[final_tokens].float()
            if hasattr(target, "token_scores"):  # a few-shot classifier's logit; its decision needs the tokens
                scores, targets, kind = target.token_scores(tokens, b, prefix), [None] * b, target.kind
                info["patch_tokens"] = tokens[:b, prefix:].detach().cpu()
            else:
                scores, targets, kind = token_target_scores(tokens, target, b, prefix=prefix)
            info["mean_patch_tokens"] = mean_patch_tokens(tokens.detach(), prefix).cpu()
        else:
            scores, targets, kind = target_scores(model, output[:b], target)
        rec.target_scores = scores
        rec.target_info = {"kind": kind, "classes": targets}
        if grad_methods:
            names = [n for n in layers if n in rec.activations and rec.activations[n].requires_grad]
            # attention probabilities share the backward (Generic Attention): only those on the graph
            attn_idx = [i for i, (_, a) in enumerate(rec.attentions) if a.requires_grad] if need_attn_grad else []
            wrt = [rec.activations[n] for n in names] + [rec.attentions[i][1] for i in attn_idx]
            wrt += [x] if need_input_grad else []
            # float16 gradients (--amp on CUDA) of small scores can underflow: scale, then undo in float32
            scale = 1024.0 if amp and batch.device.type == "cuda" else 1.0
            if not scores.requires_grad:  # no recorded layer lies on the way to the scores
                wrt = []
            grads = torch.autograd.grad(scores.sum() * scale, wrt, allow_unused=True) if wrt else ()
            if scale != 1.0:
                grads = tuple(None if g is None else g.float() / scale for g in grads)
            rec.gradients = {n: g for n, g in zip(names, grads) if g is not None}
            attn_grads = dict(zip(attn_idx, grads[len(names):]))
            rec.attention_gradients = [attn_grads.get(i) for i in range(len(rec.attentions))] if need_attn_grad else []
            rec.input_gradient = grads[-1] if need_input_grad else None
    if amp:
        _upcast(rec)
    maps: dict[str, MapResult] = {}
    own = OwnPasses(model, batch[:b], targets, kind, amp=amp) if any(m.needs_own_passes for m in active) else None
    for m in active:
        try:
            res = m.compute_with_passes(rec, own) if m.needs_own_passes else m.compute(rec)
        except NotApplicableError as e:
            skipped[m.name] = str(e)
            continue
        res.maps = _queries(res.maps, rec).detach().float().cpu()
        res.extras = {k: _queries(v, rec).detach().float().cpu() for k, v in res.extras.items()}
        res.info.setdefault("target", kind)
        maps[m.name] = res
    return PassResult(maps, skipped, output[:b].detach().cpu(), targets, kind, info)


def _float32_apart(model: nn.Module, inputs: torch.Tensor, methods: Sequence[Method], *, target: TargetSpec,
                   support: torch.Tensor | None) -> PassResult:
    """``--amp`` with methods that need float32 (:attr:`~.base.Method.needs_float32`): the others
    share the autocast pass; those get a float32 pass of their own, explaining the same classes
    (a prediction could flip between the two precisions)."""
    rest = [m for m in methods if not m.needs_float32]
    first = compute_maps(model, inputs, rest, target=target, support=support, amp=True) if rest else None
    same = target if first is None or first.target_kind not in ("label", "predicted") else first.targets
    exact = compute_maps(model, inputs, [m for m in methods if m.needs_float32], target=same, support=support)
    for res in exact.maps.values():
        res.info.update(precision="float32 (its own pass under --amp)",
                        **({"target": first.target_kind} if first is not None else {}))
    if first is None:
        return exact
    maps = {**first.maps, **exact.maps}
    return PassResult({m.name: maps[m.name] for m in methods if m.name in maps}, {**first.skipped, **exact.skipped},
                      first.output, first.targets, first.target_kind, first.info)


def _late_gradient_layers(active: Sequence[Method], model: nn.Module, whole: bool) -> set[str]:
    """The layers whose gradients are the only ones asked for (the CAM family's), when the pass
    can start without gradients and switch autograd on at the first of them that runs: the
    forward before it is never kept for a backward that does not reach it (a last-block
    Grad-CAM on a ViT keeps one block's tensors instead of every block's). Empty -- record
    from the input -- when a gradient reaches the input or the attention (``whole``), or a
    layer is found only while the model runs (the last feature map)."""
    if whole:
        return set()
    layers = {n for m in active if m.needs_gradients for n in m.activation_layers(model)}
    return set() if AUTO_FEATURE_MAP in layers else layers


def _queries(t: torch.Tensor, rec: Recording) -> torch.Tensor:
    """Rows of the query images of a per-image tensor of the whole forward batch."""
    return t[:rec.num_queries] if rec.num_support and t.shape[0] == rec.inputs.shape[0] else t
