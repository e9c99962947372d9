"""RISE (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018, arXiv:1806.07421): the target score of randomly masked copies of the image,
averaged over the masks.

Masks, as the authors' code (github.com/eclique/RISE ``explanations.py``, ``generate_masks``):
``N`` binary grids of ``s x s`` cells, each cell kept with probability ``p``; each grid is
upsampled bilinearly to ``(s + 1) * cell`` pixels per axis (``cell = ceil(H / s)``, per axis)
and cropped to ``H x W`` at a random offset in ``[0, cell)`` per axis (the shift that makes the
masks smooth and unaligned). The upsampling is scikit-image's ``resize(grid, order=1,
mode='reflect', anti_aliasing=False)`` (half-pixel centres, mirrored at the border), written as
one interpolation matrix per axis (:func:`interpolation_matrix`). Grids and offsets are drawn from
a CPU ``torch.Generator`` seeded with ``seed``: the same masks for every image of a size, on
every device.

``saliency = sum_i score_i * M_i / (N * p)``, where ``score_i`` is the target's softmax
probability for the image times mask ``M_i`` in the normalised input space (``score='probability'``,
as the authors' notebooks: the model followed by a softmax) or the raw target score that the other
methods explain (``score='raw'``: a class logit or the CLS-output norm). The map is non-negative for
probabilities and is shown min-max scaled.

Defaults from the authors' ``Easy_start`` notebook: ``N = 2000`` masks, ``s = 8`` cells, ``p = 0.5``.

Cost: ``n_masks`` forwards per image, batched ``batch_size`` masked images at a time (the memory
bound: masks are built per chunk from their grids, never all at once). No backward.

Shapes: input ``B x 3 x H x W`` -> map ``B x H x W``.
"""

from __future__ import annotations

import math

import torch

from ..errors import NotApplicableError, UsageError
from .base import MapResult, Method, Recording
from .passes import OwnPasses, add_rows, chunks
from .registry import register_method

SCORES = ("probability", "raw")


def interpolation_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``[size_out, size_in]`` float64 weights of linear resizing along one axis, as scikit-image's
    ``resize(order=1, mode='reflect')`` (``scipy.ndimage.zoom(grid_mode=True, mode='mirror')``):
    output pixel ``i`` samples input coordinate ``(i + 0.5) * size_in / size_out - 0.5``, mirrored
    about the first and last pixel centres when it falls outside them."""
    c = (torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5
    c = c.abs()  # mirror below 0
    c = torch.where(c > size_in - 1, 2 * (size_in - 1) - c, c)  # mirror above the last centre
    lo = c.floor().long().clamp(0, size_in - 1)
    frac = c - lo
    out = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    out[rows, lo] += 1 - frac
    out[rows, (lo + 1).clamp(max=size_in - 1)] += frac
    return out


def grid_masks(grid: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks ``[m, H, W]`` float32 from binary grids ``[m, s, s]`` and crop offsets ``[m, 2]`` (rows, columns).

    Each grid is resized to ``(s + 1) * ceil(H / s)`` x ``(s + 1) * ceil(W / s)`` (bilinear,
    :func:`interpolation_matrix`) and cropped to ``H x W`` at its offset.
    """
    s = grid.shape[-1]
    (h, w), device = size, grid.device
    ay = interpolation_matrix(s, (s + 1) * math.ceil(h / s)).to(device)
    ax = interpolation_matrix(s, (s + 1) * math.ceil(w / s)).to(device)
    rows = ay[shifts[:, 0, None] + torch.arange(h, device=device)]  # [m, H, s]
    cols = ax[shifts[:, 1, None] + torch.arange(w, device=device)]  # [m, W, s]
    return (rows @ grid.to(torch.float64) @ cols.transpose(1, 2)).float()


@register_method
class Rise(Method):
    name = "rise"
    in_default = False
    needs_own_passes = True
    option_choices = {"score": SCORES}
    cost = "n_masks forwards per image (masked copies), batched; no backward"

    def __init__(self, n_masks: int = 2000, cells: int = 8, p: float = 0.5, score: str = "probability",
                 seed: int = 0, batch_size: int = 32):
        if n_masks < 1 or cells < 2 or not 0 < p <= 1:
            raise UsageError(f"rise: need n_masks >= 1, cells >= 2 and 0 < p <= 1, got {n_masks}, {cells}, {p}")
        if score not in SCORES:
            raise UsageError(f"rise: score must be one of {', '.join(SCORES)}, got {score!r}")
        self.n_masks, self.cells, self.p, self.score = n_masks, cells, float(p), score
        self.seed, self.batch_size = seed, batch_size

    def draw_masks(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grid [N, s, s] bool, shifts [N, 2] long)`` for images of ``size`` ``(H, W)``, seeded."""
        n, s = self.n_masks, self.cells
        gen = torch.Generator().manual_seed(self.seed)
        grid = torch.rand((n, s, s), generator=gen) < self.p
        shifts = torch.stack([torch.randint(0, math.ceil(side / s), (n,), generator=gen) for side in size], 1)
        return grid, shifts

    def compute_with_passes(self, rec: Recording, passes: OwnPasses) -> MapResult:
        passes.check(self.name)
        if self.score == "probability" and passes.classes is None:
            raise NotApplicableError("rise scores the target's softmax probability, and target 'cls-norm' has no "
                                     "classes: use --method-option rise.score=raw (the CLS-output norm)")
        x = passes.inputs
        b, (h, w), n = x.shape[0], x.shape[-2:], self.n_masks
        grid, shifts = self.draw_masks((h, w))  # on the CPU: masks are built in float64 there (MPS has none)
        total = torch.zeros(b, h, w, device=x.device)
        rows, which = torch.arange(b * n, device=x.device) // n, torch.arange(b * n) % n
        for lo, hi in chunks(b * n, self.batch_size):
            r, k = rows[lo:hi], which[lo:hi]
            masks = grid_masks(grid[k], shifts[k], (h, w)).to(x.device, x.dtype)
            scores = passes.scores(x[r] * masks[:, None], r, probability=self.score == "probability")
            add_rows(total, r, scores[:, None, None] * masks)
        return MapResult(self.name, total / (n * self.p), info={"score": self.score})
