"""SmoothGrad (Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017,
arXiv:1706.03825): the input gradient averaged over noisy copies of the image.

``attributions = (1/n) sum_k |d score / d x (x + e_k)|`` (``absolute=True``, Captum's
``Saliency`` default) or the plain gradients (``absolute=False``); ``squared=True`` averages
their squares instead (Captum's ``smoothgrad_sq``). ``e_k ~ N(0, stdev^2)`` in the normalised
input space (default 0.5: ~11% of the range of ImageNet-normalised images, within the paper's
10-20%), drawn from a generator seeded with ``seed`` for each batch, image by image and
sample by sample (image 0's ``n`` samples first), on the CPU whatever the device, so a GPU
run draws the same noise (``tests/test_cuda.py``): on the CPU, the same noise as Captum 0.9's
``NoiseTunnel(Saliency(model)).attribute(x, nt_type=..., nt_samples=n, stdevs=stdev)`` after
``torch.manual_seed(seed)`` -- exactly when all noise is drawn at once (``batch_size >= B * n``)
or ``3 * H * W`` is a multiple of 16 (torch draws normals in blocks of 16).

The map is the maximum over colour channels of ``|attributions|`` (as ``input_gradient``);
``extras["attributions"]`` keeps them per channel ``[B, 3, H, W]``.

Cost: ``n_samples`` forwards + backwards per image, batched ``batch_size`` noisy images at a
time (the memory bound).

Shapes: input ``B x 3 x H x W`` -> map ``B x H x W``.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .base import MapResult, Method, Recording
from .passes import OwnPasses, add_rows, chunks
from .registry import register_method


@register_method
class SmoothGrad(Method):
    name = "smoothgrad"
    in_default = False
    needs_own_passes = True
    cost = "n_samples forwards + backwards per image (noisy copies), batched; the shared pass is not used"

    def __init__(self, n_samples: int = 50, stdev: float = 0.5, squared: bool = False, absolute: bool = True,
                 seed: int = 0, batch_size: int = 32):
        if n_samples < 1 or stdev < 0:
            raise UsageError(f"smoothgrad: n_samples must be >= 1 and stdev >= 0, got {n_samples}, {stdev}")
        self.n_samples, self.stdev, self.squared, self.absolute = n_samples, stdev, squared, absolute
        self.seed, self.batch_size = seed, batch_size

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        passes.check(self.name)
        x = passes.inputs
        b, n = x.shape[0], self.n_samples
        gen = torch.Generator().manual_seed(self.seed)  # on the CPU: the same noise on every device
        total = torch.zeros_like(x, dtype=torch.float32)
        rows = torch.arange(b * n, device=x.device) // n
        for lo, hi in chunks(b * n, self.batch_size):
            r = rows[lo:hi]
            noise = torch.randn((hi - lo, *x.shape[1:]), generator=gen).to(x.device, x.dtype) * self.stdev
            _, grad = passes.gradients(x[r] + noise, r)
            grad = grad.abs() if self.absolute else grad
            add_rows(total, r, grad * grad if self.squared else grad)
        attributions = total / n
        return MapResult(self.name, attributions.abs().amax(1), extras={"attributions": attributions})
