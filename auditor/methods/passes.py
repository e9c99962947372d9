"""Extra passes, batched, for the methods that need their own (``needs_own_passes``).

Score-CAM, Ablation-CAM, integrated gradients, SmoothGrad and occlusion cannot share the
engine's one forward + one backward: each needs many forwards (or forward + backward pairs)
of perturbed copies of every image. They run after the shared pass, through one
:class:`OwnPasses` object per batch that knows the model, the query images and the target
each image explains (the one the shared pass resolved), so every method scores the same
target the same way. The shared pass stays one forward and at most one backward for all the
other methods.

Memory bound: a method builds its perturbed images ``batch_size`` at a time (its
``batch_size=`` option) and hands each chunk to :meth:`OwnPasses.scores` /
:meth:`OwnPasses.gradients`; at most one chunk (and its activations) is alive at once, so
memory does not grow with the number of steps, masks or channels.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn as nn

from ..errors import NotApplicableError, UsageError

#: target kinds whose score an extra pass can recompute from the model's output alone
SCORABLE = ("label", "predicted", "cls-norm")


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` covering ``range(n)``."""
    if size < 1:
        raise UsageError(f"batch_size must be >= 1, got {size}")
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def add_rows(total: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """``total[rows[i]] += values[i]`` in a fixed order on every device (``index_add_`` uses
    atomics on CUDA); ``rows`` sorted, as :func:`chunks` of image-major pairs are."""
    for i in torch.unique_consecutive(rows).tolist():
        total[i] += values[rows == i].sum(0)


class OwnPasses:
    """Forward (and backward) passes of perturbed copies of a batch's query images.

    Args:
        model: the model in eval mode.
        inputs: the query images ``[B, 3, H, W]`` (normalised, as the shared pass saw them).
        targets: each image's target class from the shared pass (``None`` for ``cls-norm``).
        kind: the target kind of the shared pass (``label``, ``predicted``, ``cls-norm``).
        amp: run the passes under ``torch.autocast`` like the shared pass.

    ``forward_images`` / ``backward_images`` count the images passed, for the results.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: list[int | None], kind: str, *,
                 amp: bool = False):
        self.model, self.inputs, self.kind, self.amp = model, inputs.detach(), kind, amp
        self.classes = None if kind == "cls-norm" else torch.as_tensor(
            [-1 if t is None else t for t in targets], dtype=torch.long, device=inputs.device)
        self.forward_images = 0
        self.backward_images = 0

    def check(self, method: str) -> None:
        if self.kind not in SCORABLE:
            raise NotApplicableError(f"{method} re-runs the model on perturbed images and scores a class logit or the "
                                     f"CLS-output norm; target '{self.kind}' needs support images or final tokens")

    def autocast(self, enabled: bool = True) -> torch.autocast:
        """The autocast of the shared pass (``--amp``), for a method's own forward passes."""
        from .engine import amp_dtype

        device = self.inputs.device
        return torch.autocast(device.type, dtype=amp_dtype(device), enabled=self.amp and enabled)

    def _forward(self, x: torch.Tensor, rows: torch.Tensor, probability: bool = False, *,
                 amp: bool = True) -> torch.Tensor:
        with self.autocast(amp):
            out = self.model(x)
        out = (out[0] if isinstance(out, (tuple, list)) else out).float()
        self.forward_images += x.shape[0]
        if self.classes is None:
            return out.norm(dim=-1)
        if probability:
            out = out.softmax(dim=-1)
        return out.gather(1, self.classes[rows.to(self.classes.device)][:, None])[:, 0]

    def scores(self, x: torch.Tensor, rows: torch.Tensor, *,
               replace: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
               probability: bool = False) -> torch.Tensor:
        """Target scores ``[N]`` of images ``x`` ``[N, 3, H, W]``; ``rows[i]`` is the query image
        whose target row ``i`` explains. ``replace=(layer, fn)``: that layer's output is replaced
        by ``fn(output)`` in this pass (Ablation-CAM). ``probability``: the target class's softmax
        probability instead of its logit (RISE). No gradients.

        A pass with ``replace`` runs in float32 even under ``--amp``: Ablation-CAM's ablation
        value (about ``-1e7``) overflows float16 to ``-inf`` and every map became NaN."""
        with torch.no_grad(), _replaced(self.model, replace):
            return self._forward(x, rows, probability, amp=replace is None)

    def gradients(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [N], d scores / d x [N, 3, H, W])`` of images ``x``, one backward per chunk."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            s = self._forward(x, rows)
            (g,) = torch.autograd.grad(s.sum(), x)
        self.backward_images += x.shape[0]
        return s.detach(), g.detach().float()


@contextmanager
def _replaced(model: nn.Module, replace: tuple[str, Callable] | None) -> Iterator[None]:
    if replace is None:
        yield
        return
    name, fn = replace
    modules = dict(model.named_modules())
    if name not in modules:
        raise NotApplicableError(f"the model has no layer named '{name}'")
    handle = modules[name].register_forward_hook(lambda m, a, out: fn(out[0] if isinstance(out, (tuple, list)) else out))
    try:
        yield
    finally:
        handle.remove()
