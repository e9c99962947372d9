"""Shared pieces of the faithfulness checks: pixel order, batched probabilities, baselines."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import maps as maplib

#: perturbed inputs per forward pass (stacked across the steps and images of a batch)
FORWARD_BATCH = 64
BASELINES = ("blur", "mean", "noise", "zero")


def input_saliency(raw: torch.Tensor | np.ndarray, size: tuple[int, int], normalization: str = "minmax") -> np.ndarray:
    """Raw maps ``[B, h, w]`` -> float32 ``[B, H, W]`` in ``[0, 1]`` at the model's input size
    (the method's own :class:`auditor.maps.PostProcess`, ``normalization`` its recorded mode)."""
    raw = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    return maplib.PostProcess.from_mode(normalization)(raw, size)


def pixel_order(saliency: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Flat pixel indices ``[H*W]``, most salient first; ties in a seeded random order.

    (A ReLU'd map is flat at zero over much of the image: a row-major tie rule would remove
    the top rows first, a bias; a seeded shuffle does not.)
    """
    s = np.asarray(saliency, dtype=np.float64).ravel()
    tie = np.random.default_rng(seed).permutation(s.size)
    return np.lexsort((tie, -s))


def ranks(order: np.ndarray) -> np.ndarray:
    """Inverse permutation: ``ranks[p]`` = position of pixel ``p`` in ``order``."""
    r = np.empty_like(order)
    r[order] = np.arange(order.size)
    return r


def class_probabilities(model: nn.Module, inputs: torch.Tensor, targets: Sequence[int], *,
                        forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """Softmax probability of ``targets[i]`` for each input ``[N, 3, H, W]`` -> ``[N]`` (no grad)."""
    out = []
    t = torch.as_tensor(list(targets), dtype=torch.long)
    with torch.no_grad():
        for start in range(0, inputs.shape[0], forward_batch):
            logits = model(inputs[start:start + forward_batch])
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            p = logits.float().softmax(-1).cpu()
            out.append(p.gather(1, t[start:start + forward_batch, None])[:, 0])
    return torch.cat(out) if out else torch.zeros(0)


def chunked(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def gaussian_kernel(size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The RISE authors' blur kernel ``gkern(klen=11, nsig=5)``: ``scipy.ndimage.gaussian_filter``
    of a centred unit impulse on a ``size x size`` grid (reflecting borders, so it sums to 1)."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    return torch.as_tensor(gaussian_filter(impulse, sigma), dtype=torch.float32)


def baseline_image(x: torch.Tensor, kind: str, *, seed: int = 0) -> torch.Tensor:
    """What removed pixels become, ``[B, 3, H, W]`` like ``x``.

    ``"blur"``: the image blurred by RISE's 11 x 11 Gaussian kernel, sigma 5 px
    (:func:`gaussian_kernel`; zero padding, as the RISE code's ``conv2d(..., padding=klen // 2)``); ``"mean"``: each channel's mean over the
    image; ``"noise"``: Gaussian noise with each channel's mean and standard deviation
    (seeded); ``"zero"``: 0 in the model's input space (the mean colour when the input is
    standardised; RISE's deletion substrate).
    """
    if kind == "blur":
        k = gaussian_kernel().to(x.device, x.dtype)
        c = x.shape[1]
        return F.conv2d(x, k.expand(c, 1, *k.shape), padding=k.shape[-1] // 2, groups=c)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
        return x.mean((2, 3), keepdim=True) + noise * x.std((2, 3), keepdim=True)
    if kind == "zero":
        return torch.zeros_like(x)
    raise ValueError(f"unknown baseline '{kind}': use one of {', '.join(BASELINES)}")


def nan_curve(steps: int) -> np.ndarray:
    return np.full(steps + 1, math.nan)
