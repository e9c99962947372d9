"""Integrated gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks",
ICML 2017): gradients integrated along the straight path from a baseline ``x'`` to the image.

``attributions = (x - x') * sum_k w_k * d score / d x (x' + a_k (x - x'))`` with nodes
``a_k`` and weights ``w_k`` of ``method``: ``"gausslegendre"`` (Captum's default: numpy's
``leggauss(n)`` mapped to [0, 1]) or ``"riemann_left|right|middle|trapezoid"`` -- Captum 0.9's
``IntegratedGradients(model).attribute(x, baselines=x', target=..., n_steps=n, method=...)``.

Baselines (``baseline=``), in the normalised input space the model sees:
``"zero"`` (0: Captum's default, the data set's mean colour for mean/std-normalised input),
``"black"`` (pixel value 0: ``-mean / std`` per channel, ``mean`` / ``std`` options, ImageNet's
by default), ``"blur"`` (the image blurred by a Gaussian of ``blur_sigma`` pixels, reflected at
the border; Sturmfels et al., Distill 2020), ``"noise"`` (the image plus seeded Gaussian noise
of ``noise_stdev``, same generator convention as ``smoothgrad``).

Completeness (the paper's axiom): ``sum(attributions) = score(x) - score(x')``; its error
per image, Captum's "convergence delta" ``sum(attributions) - (score(x) - score(x'))``, is
returned in ``extras["completeness_error"]`` ``[B]`` (an audit writes it into each row's metrics,
``integrated_gradients.completeness_error``) and grows when ``n_steps`` is too small.

The map is the sum over colour channels of the attributions (signed; it keeps completeness),
displayed and scored after a ReLU (``relu_minmax``: the evidence for the target);
``extras["attributions"]`` keeps them per channel ``[B, 3, H, W]``.

Cost: ``n_steps`` forwards + backwards per image, plus 2 forwards per image (the image's and
the baseline's score), batched ``batch_size`` path points at a time (the memory bound).

Shapes: input ``B x 3 x H x W`` -> map ``B x H x W``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..images import IMAGENET_MEAN, IMAGENET_STD
from .base import MapResult, Method, Recording
from .passes import OwnPasses, add_rows, chunks
from .registry import register_method

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
BASELINES = ("zero", "black", "blur", "noise")


def path_nodes(method: str, n: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of ``n`` points on [0, 1], exactly as Captum's ``approximation_parameters``."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    if method not in METHODS or n < 2:
        raise UsageError(f"integrated_gradients: method must be one of {', '.join(METHODS)} (Riemann needs "
                         f"n_steps >= 2), got {method!r} with n_steps {n}")
    kind = method.split("_")[1]
    weights = [1 / n] * n
    if kind == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    lo, hi = {"trapezoid": (0, 1), "left": (0, 1 - 1 / n), "middle": (1 / (2 * n), 1 - 1 / (2 * n)),
              "right": (1 / n, 1)}[kind]
    return weights, torch.linspace(lo, hi, n).tolist()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[B, C, H, W]`` blurred by a separable Gaussian (radius ``ceil(3 sigma)``, reflect padding)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    pad_h, pad_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    y = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    y = F.conv2d(y, k[radius - pad_h:radius + pad_h + 1].view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(y, k[radius - pad_w:radius + pad_w + 1].view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


@register_method
class IntegratedGradients(Method):
    name = "integrated_gradients"
    normalization = "relu_minmax"  # signed: positive evidence for the target, as the CAMs
    in_default = False
    needs_own_passes = True
    cost = "n_steps forwards + backwards per image, + 2 forwards per image (image and baseline scores), batched"

    def __init__(self, n_steps: int = 50, method: str = "gausslegendre", baseline: str = "zero",
                 blur_sigma: float = 10.0, noise_stdev: float = 0.5, seed: int = 0, batch_size: int = 32,
                 mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD):
        if baseline not in BASELINES:
            raise UsageError(f"integrated_gradients: baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        path_nodes(method, n_steps)  # validates
        self.n_steps, self.method, self.baseline = n_steps, method, baseline
        self.blur_sigma, self.noise_stdev, self.seed, self.batch_size = blur_sigma, noise_stdev, seed, batch_size
        self.mean, self.std = tuple(mean), tuple(std)

    def baseline_images(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline ``x'`` of each image ``[B, 3, H, W]``."""
        if self.baseline == "zero":
            return torch.zeros_like(x)
        if self.baseline == "black":
            mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in (self.mean, self.std))
            return ((0 - mean) / std).expand_as(x).clone()
        if self.baseline == "blur":
            return gaussian_blur(x, self.blur_sigma)
        gen = torch.Generator().manual_seed(self.seed)  # on the CPU: the same baseline on every device
        return x + torch.randn(x.shape, generator=gen).to(x.device, x.dtype) * self.noise_stdev

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        passes.check(self.name)
        x = passes.inputs
        b, n = x.shape[0], self.n_steps
        base = self.baseline_images(x)
        weights, alphas = path_nodes(self.method, n)
        step = torch.tensor(weights).float().to(x.device)
        alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)  # float32, as Captum's scalar multiply
        total = torch.zeros_like(x, dtype=torch.float32)
        rows, ks = torch.arange(b * n, device=x.device) // n, torch.arange(b * n, device=x.device) % n
        for lo, hi in chunks(b * n, self.batch_size):
            r, k = rows[lo:hi], ks[lo:hi]
            points = base[r] + alpha[k].view(-1, 1, 1, 1) * (x[r] - base[r])
            _, grad = passes.gradients(points, r)
            add_rows(total, r, grad * step[k].view(-1, 1, 1, 1))
        attributions = total * (x - base)
        index = torch.arange(b, device=x.device)
        delta = attributions.reshape(b, -1).sum(1) - (passes.scores(x, index) - passes.scores(base, index))
        return MapResult(self.name, attributions.sum(1),
                         extras={"attributions": attributions, "completeness_error": delta})
