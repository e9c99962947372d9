"""One pass for every requested method: one forward, at most one backward.

:func:`compute_maps` registers the hooks all methods need (:class:`~.base.Recorder`), runs
the model once on the batch, and -- only if a gradient method was asked for -- takes the
gradients of the batch's target scores with respect to the recorded layers in a single
``torch.autograd.grad`` call (parameter ``.grad`` fields are left untouched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import NotApplicableError, UsageError
from .base import MapResult, Method, Recorder, Recording

TargetSpec = None | str | Sequence[int] | torch.Tensor


@dataclass
class PassResult:
    """Maps of every method that applied, reasons for those that did not, and the output.

    ``targets`` holds each image's target class (``None`` for a non-class target such as
    the CLS-token norm); ``target_kind`` says which kind of target was used.
    """

    maps: dict[str, MapResult]
    skipped: dict[str, str]
    output: torch.Tensor
    targets: list[int | None]
    target_kind: str
    info: dict[str, Any] = field(default_factory=dict)


def is_headless(model: nn.Module) -> bool:
    """True for backbones without a class head (timm / DINO convention ``num_classes == 0``)."""
    return getattr(model, "num_classes", None) == 0


def target_scores(model: nn.Module, output: torch.Tensor, target: TargetSpec) -> tuple[torch.Tensor, list[int | None], str]:
    """Per-image scalar scores ``[B]`` to explain, the target classes, and the kind of target.

    ``target``: ``None`` (the predicted class, or the CLS-output norm for a headless
    backbone), ``"predicted"``, ``"cls-norm"``, or one class index per image (``None``
    entries take that image's predicted class).
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
        predicted = output.argmax(-1).tolist()
        idx = torch.as_tensor([p if t is None else t for t, p in zip(target, predicted)] if len(target) == b
                              else list(target), dtype=torch.long, device=output.device)
        if idx.shape != (b,):
            raise UsageError(f"need one target class per image ({b}), got {tuple(idx.shape)}")
        if is_headless(model):
            raise UsageError("this backbone has no class head: use target 'cls-norm' (or a prototype target)")
        if (idx < 0).any() or (idx >= output.shape[1]).any():
            raise UsageError(f"target class out of range: the model has {output.shape[1]} classes, got {idx.tolist()}")
        kind = "label"
    return output.gather(1, idx[:, None])[:, 0], idx.tolist(), kind


def compute_maps(model: nn.Module, inputs: torch.Tensor, methods: Sequence[Method], *,
                 target: TargetSpec = None) -> PassResult:
    """Run every method on a batch ``inputs`` ``[B, 3, H, W]`` in one pass.

    Returns raw maps ``[B, h, w]`` per method (on the CPU). A method that does not apply is
    listed in ``skipped`` with its reason instead of failing the others.
    """
    skipped: dict[str, str] = {}
    active: list[Method] = []
    for m in methods:
        try:
            m.check(model)
            active.append(m)
        except NotApplicableError as e:
            skipped[m.name] = str(e)
    need_attn = any(m.needs_attention for m in active)
    grad_methods = [m for m in active if m.needs_gradients]
    layers = sorted({name for m in grad_methods for name in m.activation_layers(model)})
    rec = Recording(model=model, inputs=inputs)
    model.eval()
    with Recorder(model, rec, attention=need_attn, activations=layers), torch.set_grad_enabled(bool(grad_methods)):
        x = inputs.detach().requires_grad_(True) if grad_methods else inputs
        rec.output = output = model(x)
        if isinstance(output, (tuple, list)):
            rec.output = output = output[0]
        scores, targets, kind = target_scores(model, output, target)
        rec.target_scores = scores
        if grad_methods:
            names = [n for n in layers if n in rec.activations and rec.activations[n].requires_grad]
            grads = torch.autograd.grad(scores.sum(), [rec.activations[n] for n in names], allow_unused=True)
            rec.gradients = {n: g for n, g in zip(names, grads) if g is not None}
    maps: dict[str, MapResult] = {}
    for m in active:
        try:
            res = m.compute(rec)
        except NotApplicableError as e:
            skipped[m.name] = str(e)
            continue
        res.maps = res.maps.detach().float().cpu()
        res.extras = {k: v.detach().float().cpu() for k, v in res.extras.items()}
        res.info.setdefault("target", kind)
        maps[m.name] = res
    return PassResult(maps, skipped, output.detach().cpu(), targets, kind)
