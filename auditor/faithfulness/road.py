"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

Deleting pixels by a constant leaks the removed shape to the model (the class can be read
off the mask's outline). ROAD instead fills each removed pixel with **noisy linear
imputation**: the value ``x_i`` of every removed pixel is the weighted mean of its 8
neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonals; neighbours outside
the image are left out and the weights of the rest are not renormalised in the matrix --
the row's diagonal is the sum of the valid weights), known neighbours taken from the
image, removed ones unknowns: one sparse linear system per image and fraction
(``scipy.sparse``), solved for all channels at once; Gaussian noise of standard deviation
``noise`` (0.01 in the paper's code) is added to the imputed values. This is the authors'
``NoisyLinearImputer`` (github.com/tleemann/road_evaluation, as shipped in pytorch-grad-cam
1.5.7 ``metrics/road.py``); ``tests/reference_faithfulness.json`` pins the equality.

Orders: **MoRF** removes the most relevant pixels first (a faithful map makes the
probability drop: lower is better), **LeRF** the least relevant first (it should stay:
higher is better). The score is the mean target-class probability over the removal
fractions ``k / steps``, ``k = 1 .. steps - 1`` (all pixels removed leaves nothing to
impute from; with ``steps = 10`` this is the paper's 10 % .. 90 % grid).

Cost per image: ``2 (steps - 1)`` forward passes and as many sparse solves (one per
order and fraction; the solves dominate at 224 px).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
from scipy.sparse.linalg import spsolve

from ..metrics.faithfulness import pixel_counts
from ._common import FORWARD_BATCH, chunked, class_probabilities, pixel_order, ranks

ORDERS = ("morf", "lerf")
#: (row offset, column offset) -> weight, as the ROAD authors' ``neighbors_weights``
NEIGHBOUR_WEIGHTS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                     ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def road_fractions(steps: int) -> np.ndarray:
    """``[1/steps, ..., (steps-1)/steps]``: the removal fractions ROAD evaluates."""
    if steps < 2:
        raise ValueError(f"ROAD needs steps >= 2, got {steps}")
    return np.arange(1, steps, dtype=np.float64) / steps


def noisy_linear_impute(image: np.ndarray, keep: np.ndarray, *, noise: float = 0.01,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Fill the pixels where ``keep`` is False by noisy linear imputation (see the module doc).

    Args:
        image: ``[C, H, W]`` float values.
        keep: ``[H, W]`` bool, True where the pixel is known.
        noise: standard deviation of the Gaussian noise added to the imputed values.
        rng: noise source [``np.random.default_rng(0)``].

    Returns:
        float64 ``[C, H, W]``: known pixels unchanged, removed ones imputed.
    """
    img = np.asarray(image, dtype=np.float64)
    c, h, w = img.shape
    known = np.asarray(keep, dtype=bool).ravel()
    if known.shape[0] != h * w:
        raise ValueError(f"keep must be [H, W] = {(h, w)}, got {np.shape(keep)}")
    unknown = np.flatnonzero(~known)
    out = img.reshape(c, -1).copy()
    if unknown.size == 0:
        return out.reshape(c, h, w)
    if not known.any():
        raise ValueError("every pixel is removed: nothing to impute from")
    var = np.full(h * w, -1, dtype=np.int64)
    var[unknown] = np.arange(unknown.size)
    r0, c0 = np.divmod(unknown, w)
    diag = np.zeros(unknown.size)
    rows, cols, vals = [], [], []
    rhs = np.zeros((unknown.size, c))
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
        r, cc = r0 + dr, c0 + dc
        valid = (r >= 0) & (r < h) & (cc >= 0) & (cc < w)
        ids = np.flatnonzero(valid)
        nb = r[valid] * w + cc[valid]
        diag[ids] += weight
        has = known[nb]
        rhs[ids[has]] -= weight * out[:, nb[has]].T
        rows.append(ids[~has])
        cols.append(var[nb[~has]])
        vals.append(np.full(int((~has).sum()), weight))
    n = unknown.size
    a = sp.csc_matrix((np.concatenate([*vals, -diag]),
                       (np.concatenate([*rows, np.arange(n)]), np.concatenate([*cols, np.arange(n)]))), shape=(n, n))
    sol = spsolve(a, rhs).reshape(n, c)
    if noise:
        sol = sol + noise * (rng or np.random.default_rng(0)).standard_normal(sol.shape)
    out[:, unknown] = sol.T
    return out.reshape(c, h, w)


def road_curves(model: nn.Module, inputs: torch.Tensor, saliency: np.ndarray, targets: Sequence[int], *,
                order: str = "morf", steps: int = 10, noise: float = 0.01, seed: int = 0,
                forward_batch: int = FORWARD_BATCH) -> np.ndarray:
    """Target-class probabilities ``[B, steps - 1]`` at :func:`road_fractions` after ROAD removal.

    ``order``: ``"morf"`` (most relevant removed first) or ``"lerf"``. ``saliency``
    ``[B, H, W]`` at the input resolution. Noise is seeded (``seed`` + image index).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    b, _, h, w = inputs.shape
    counts = pixel_counts(road_fractions(steps), h * w)
    x = inputs.detach().cpu().double().numpy()
    ranks_, rngs = [], []
    for i in range(b):
        s = np.asarray(saliency[i], dtype=np.float64)
        ranks_.append(ranks(pixel_order(s if order == "morf" else -s, seed=seed + i)).reshape(h, w))
        rngs.append(np.random.default_rng(seed + i))
    k = len(counts)
    per = [int(t) for t in targets for _ in counts]
    probs = []
    for sl in chunked(b * k, forward_batch):  # impute one forward batch at a time (bounded memory)
        imputed = [noisy_linear_impute(x[i], ranks_[i] >= counts[j], noise=noise, rng=rngs[i])
                   for i, j in (divmod(m, k) for m in range(sl.start, sl.stop))]
        stack = torch.as_tensor(np.stack(imputed), dtype=inputs.dtype, device=inputs.device)
        probs.append(class_probabilities(model, stack, per[sl], forward_batch=forward_batch))
    return torch.cat(probs).reshape(b, len(counts)).double().numpy()


def road(model: nn.Module, inputs: torch.Tensor, saliency: np.ndarray, targets: Sequence[int], *,
         steps: int = 10, noise: float = 0.01, seed: int = 0, forward_batch: int = FORWARD_BATCH) -> dict[str, np.ndarray]:
    """``{"road_morf": [B], "road_lerf": [B], "road_morf_curve": [B, steps-1], "road_lerf_curve": ...}``."""
    out: dict[str, np.ndarray] = {}
    for order in ORDERS:
        curves = road_curves(model, inputs, saliency, targets, order=order, steps=steps, noise=noise, seed=seed,
                             forward_batch=forward_batch)
        out[f"road_{order}_curve"] = curves
        out[f"road_{order}"] = curves.mean(1)
    return out
