"""Random-target test: does the map change when another class is explained?

For a model with a class head, each image's map for its target class is compared
(:mod:`.similarity`) with the map for a random *other* class (seeded). The headline
``random_target_spearman`` is the Spearman correlation of the two maps *as normalised for
scoring* (``spearman_normalised``: Grad-CAM's ReLU included), not of their absolute values:
a class-specific gradient map often just flips sign for another class (evidence for "red"
is evidence against "green"), which the absolute value would hide. A method whose two
maps agree (above 0.5, :data:`~.similarity.SIMILARITY_THRESHOLD`) is class-insensitive: it shows what is salient in the image, not the evidence for a class
(Adebayo et al., NeurIPS 2018, discuss the same failure for edge-like maps; Sixt, Granz &
Landgraf, ICML 2020, show it for several modified-backprop methods).

Cost per image: one forward + backward (all methods in one pass).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..methods import compute_maps, is_headless
from ..methods.base import Method
from .similarity import MEASURES, map_similarity


def other_classes(targets: Sequence[int], num_classes: int, *, seed: int = 0) -> list[int]:
    """A uniformly random class different from each target (seeded)."""
    if num_classes < 2:
        raise NotApplicableError("the random-target test needs a model with at least 2 classes")
    rng = np.random.default_rng(seed)
    return [int((t + 1 + rng.integers(num_classes - 1)) % num_classes) for t in targets]


def random_target(model: nn.Module, inputs: torch.Tensor, methods: Sequence[Method],
                  trained_maps: dict[str, torch.Tensor], targets: Sequence[int | None], *, num_classes: int,
                  seed: int = 0) -> dict:
    """``{"targets": [B], "similarity": {method: {measure: float64 [B]}}}``; see the module doc."""
    if is_headless(model) or any(t is None for t in targets):
        raise NotApplicableError("the random-target test needs a model with a class head")
    others = other_classes([int(t) for t in targets], num_classes, seed=seed)
    res = compute_maps(model, inputs, [m for m in methods if m.name in trained_maps], target=others)
    size = tuple(inputs.shape[-2:])
    norm = {m.name: m.normalization for m in methods}
    sim = {m: {k: np.full(inputs.shape[0], np.nan) for k in MEASURES} for m in trained_maps}
    for m in trained_maps:
        if m not in res.maps:
            continue
        for i in range(inputs.shape[0]):
            for k, v in map_similarity(trained_maps[m][i].numpy(), res.maps[m].maps[i].numpy(), size, norm[m]).items():
                sim[m][k][i] = v
    return {"targets": others, "similarity": sim}
