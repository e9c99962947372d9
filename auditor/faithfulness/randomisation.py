"""Model parameter randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim,
"Sanity Checks for Saliency Maps", NeurIPS 2018), cascading from the top.

On a deep copy of the model, the layers are re-initialised one after another from the
output down (:func:`cascade_layers`: for a ViT ``head``, ``fc_norm`` / ``norm``,
``blocks[-1]``, ..., ``blocks[0]``, ``patch_embed``; for any other model its named
children in reverse), each step keeping the earlier ones random. After each step the
maps of every method are recomputed (one :func:`~auditor.methods.compute_maps` pass for
all methods, explaining the *same* target classes as for the trained model) and compared
with the trained model's maps (:mod:`.similarity`).

Re-initialisation: every sub-module with a ``reset_parameters()`` is reset (PyTorch's
default initialisers); any other parameter (``cls_token``, ``pos_embed``, ...) is drawn from
``N(0, 0.02^2)`` (timm's initialisation); all seeded, without touching the global RNG.

A method whose maps after *full* randomisation still have a Spearman correlation (absolute
maps) above :data:`~.similarity.SIMILARITY_THRESHOLD` (0.5) with the trained model's maps
"does not depend on the weights": it shows the image (edges, colour), not the model.

Cost per image: one forward + backward per cascade step (``len(cascade_layers(model))``).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..methods import compute_maps
from ..methods.base import Method
from .similarity import MEASURES, map_similarity


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def cascade_layers(model: nn.Module) -> list[str]:
    """Names of the modules to randomise, top (output) first."""
    children = dict(model.named_children())
    blocks = children.get("blocks")
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks):
        out = [n for n in ("head", "fc_norm", "norm") if n in children and _has_params(children[n])]
        out += [f"blocks.{i}" for i in reversed(range(len(blocks)))]
        out += [n for n in ("patch_embed",) if n in children and _has_params(children[n])]
        return out
    return [n for n, m in reversed(list(children.items())) if _has_params(m)]


def randomise_(module: nn.Module, *, seed: int = 0) -> None:
    """Re-initialise every parameter of ``module`` in place (see the module doc)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        covered: set[int] = set()
        for m in module.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                covered.update(id(p) for p in m.parameters(recurse=False))
        for p in module.parameters():
            if id(p) not in covered:
                p.normal_(0.0, 0.02)


def randomisation_cascade(model: nn.Module, inputs: torch.Tensor, methods: Sequence[Method],
                          trained_maps: dict[str, torch.Tensor], targets: Sequence[int | None], *,
                          seed: int = 0, layers: Sequence[str] | None = None) -> dict:
    """Similarity of each method's maps to the trained model's, after each cascade step.

    Args:
        inputs: ``[B, 3, H, W]``.
        methods: the method objects (their ``normalization`` is used for SSIM).
        trained_maps: ``{method: raw maps [B, h, w]}`` of the trained model (from the batch's pass).
        targets: the classes the trained maps explain (``None``: the engine's default target).
        layers: the cascade [default: :func:`cascade_layers`].

    Returns:
        ``{"layers": [...], "similarity": {method: {measure: float64 [L, B]}}}``.
    """
    layers = list(layers) if layers is not None else cascade_layers(model)
    size = tuple(inputs.shape[-2:])
    norm = {m.name: m.normalization for m in methods}
    names = [m for m in trained_maps]
    sim = {m: {k: np.full((len(layers), inputs.shape[0]), np.nan) for k in MEASURES} for m in names}
    rand = copy.deepcopy(model).eval()
    modules = dict(rand.named_modules())
    target = None if all(t is None for t in targets) else list(targets)
    active = [m for m in methods if m.name in trained_maps]
    for step, name in enumerate(layers):
        randomise_(modules[name], seed=seed + step)
        res = compute_maps(rand, inputs, active, target=target)
        for m in names:
            if m not in res.maps:
                continue
            for i in range(inputs.shape[0]):
                vals = map_similarity(trained_maps[m][i].numpy(), res.maps[m].maps[i].numpy(), size, norm[m])
                for k, v in vals.items():
                    sim[m][k][step, i] = v
    return {"layers": layers, "similarity": sim}
