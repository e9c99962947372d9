"""Deletion and insertion curves (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
Explanation of Black-box Models", BMVC 2018).

Pixels are ranked by the saliency map at the model's input resolution (the method's own
normalisation; ties in a seeded random order), and the fraction ``f_k = k / steps`` of
the pixels (``ceil(f_k * H * W)``, all channels), most salient first, is

* **deleted**: replaced by a baseline image (``blur`` / ``mean`` / ``noise`` / ``zero``,
  :func:`~._common.baseline_image`), starting from the image; or
* **inserted**: copied from the image into the blurred one (RISE's insertion substrate;
  the ``baseline`` option applies too), starting from the baseline.

The curve is the softmax probability of the target class at ``f_0 = 0, ..., f_steps = 1``
(``steps + 1`` forward passes per image per curve, batched: the perturbed inputs of all the
steps and images of a batch are stacked and run ``forward_batch`` at a time); its area is
:func:`auditor.metrics.faithfulness.curve_auc` (trapezoid over ``f`` in ``[0, 1]``, the RISE
code's normalisation). A faithful map gives a *small* deletion area (the probability drops
at once) and a *large* insertion area.

The raw area rewards an unconfident model, so the checks also report each curve divided by
the unperturbed image's probability (:func:`~auditor.metrics.faithfulness.normalised_curve`)
and compare it with the curve of a **random pixel order** (:func:`random_order_saliency`: one
seeded permutation of the pixels, the same for every image of a size, so it depends on
neither the image nor the batch it is in): ``*_vs_random`` is the area between the two
normalised curves (:func:`~auditor.metrics.faithfulness.area_above_random`), 0 for a map no
better than chance. The random-order curves do not depend on the method: ``steps + 1`` more
forward passes per image and curve kind, shared by every method.

Shapes: ``inputs`` ``[B, 3, H, W]`` (the model's normalised input), ``saliency``
``[B, H, W]`` -> curves ``[B, steps + 1]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..metrics.faithfulness import MODES, curve_scores, pixel_counts, removal_fractions
from ._common import FORWARD_BATCH, baseline_image, chunked, class_probabilities, pixel_order, ranks

#: second word of the random order's seed sequence: another stream than the tie order's
_RANDOM_ORDER_STREAM = 1


def random_order_saliency(shape: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """A "map" ``[H, W]`` (float64) whose order is a uniformly random permutation of the pixels
    (all values distinct: no ties), from ``seed`` alone."""
    h, w = shape
    perm = np.random.default_rng([seed, _RANDOM_ORDER_STREAM]).permutation(h * w)
    return perm.reshape(h, w).astype(np.float64)


def perturbed_stack(image: torch.Tensor, fill: torch.Tensor, order: np.ndarray, counts: np.ndarray) -> torch.Tensor:
    """``[K, 3, H, W]``: ``image`` with its first ``counts[k]`` pixels of ``order`` taken from ``fill``."""
    h, w = image.shape[-2:]
    rank = torch.as_tensor(ranks(order), device=image.device).reshape(1, 1, h, w)
    n = torch.as_tensor(counts, device=image.device).reshape(-1, 1, 1, 1)
    return torch.where(rank < n, fill[None], image[None])


def perturbation_curves(model: nn.Module, inputs: torch.Tensor, saliency: np.ndarray, targets: Sequence[int], *,
                        mode: str = "deletion", steps: int = 20, baseline: str = "blur", seed: int = 0,
                        forward_batch: int = FORWARD_BATCH) -> np.ndarray:
    """Deletion or insertion curves ``[B, steps + 1]`` (target-class probabilities); see the module doc.

    Args:
        inputs: ``[B, 3, H, W]`` model inputs.
        saliency: ``[B, H, W]`` maps at the input resolution (higher = more salient).
        targets: the class explained for each image.
        mode: ``"deletion"`` or ``"insertion"``.
        steps: number of equal steps from 0 to all pixels [20].
        baseline: ``"blur"`` [default], ``"mean"``, ``"noise"`` or ``"zero"``.
        seed: tie order of equal saliency values, and the ``noise`` baseline.
        forward_batch: perturbed inputs per forward pass [64].
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    b, _, h, w = inputs.shape
    if np.shape(saliency) != (b, h, w):
        raise ValueError(f"saliency must be [B, H, W] = {(b, h, w)}, got {np.shape(saliency)}")
    counts = pixel_counts(removal_fractions(steps), h * w)
    base = baseline_image(inputs, baseline, seed=seed)
    start, fill = (inputs, base) if mode == "deletion" else (base, inputs)
    rank = [torch.as_tensor(ranks(pixel_order(saliency[i], seed=seed + i)), device=inputs.device).reshape(h, w)
            for i in range(b)]
    k = len(counts)
    per_image_targets = [int(t) for t in targets for _ in range(k)]
    probs = []
    for sl in chunked(b * k, forward_batch):  # build only one forward batch of perturbed inputs at a time
        rows = []
        for j in range(sl.start, sl.stop):
            i, step = divmod(j, k)
            rows.append(torch.where(rank[i] < int(counts[step]), fill[i], start[i]))
        probs.append(class_probabilities(model, torch.stack(rows), per_image_targets[sl], forward_batch=forward_batch))
    return torch.cat(probs).reshape(b, k).double().numpy()


def random_order_curves(model: nn.Module, inputs: torch.Tensor, targets: Sequence[int], *, mode: str = "deletion",
                        steps: int = 20, baseline: str = "blur", seed: int = 0,
                        forward_batch: int = FORWARD_BATCH) -> np.ndarray:
    """The random-order reference ``[B, steps + 1]``: :func:`perturbation_curves` of
    :func:`random_order_saliency` (the same order for every image)."""
    b, _, h, w = inputs.shape
    sal = np.broadcast_to(random_order_saliency((h, w), seed=seed), (b, h, w))
    return perturbation_curves(model, inputs, sal, targets, mode=mode, steps=steps, baseline=baseline, seed=seed,
                               forward_batch=forward_batch)


def deletion_insertion(model: nn.Module, inputs: torch.Tensor, saliency: np.ndarray, targets: Sequence[int], *,
                       steps: int = 20, baseline: str = "blur", seed: int = 0,
                       forward_batch: int = FORWARD_BATCH) -> dict[str, np.ndarray]:
    """Both curves and their scores: per mode ``{mode}`` and ``random_{mode}`` ``[B, steps + 1]``
    (target probabilities for the map's order and the random order) and
    :func:`~auditor.metrics.faithfulness.curve_scores` (``{mode}_normalised``, ``{mode}_auc``,
    ``{mode}_auc_normalised``, ``{mode}_vs_random``)."""
    out: dict[str, np.ndarray] = {}
    kw = dict(steps=steps, baseline=baseline, seed=seed, forward_batch=forward_batch)
    for mode in MODES:
        out[mode] = perturbation_curves(model, inputs, saliency, targets, mode=mode, **kw)
        out[f"random_{mode}"] = random_order_curves(model, inputs, targets, mode=mode, **kw)
        out.update(curve_scores(out[mode], out[f"random_{mode}"], mode))
    return out
