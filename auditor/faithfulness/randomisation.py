"""Model parameter randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim,
"Sanity Checks for Saliency Maps", NeurIPS 2018), cascading from the top.

On a deep copy of the model, the learnt parameters are re-drawn one *step* after another
from the output down, each step keeping the earlier ones random; after the last step
**every** parameter of the model is random. After each step the maps of every method are
recomputed (one :func:`~auditor.methods.compute_maps` pass for all methods, explaining the
*same* target classes as for the trained model) and compared with the trained model's maps
(:mod:`.similarity`).

Steps (:func:`cascade_steps`), one rule for every model:

* the units are the model's top-level children; a child whose type is exactly
  ``nn.ModuleList`` or ``nn.Sequential`` is a container of blocks and is split into its
  elements (recursively), one step per block -- a ViT's ``blocks.N``, EfficientNet-Lite's
  ``_blocks.N`` (one MBConv each), a torchvision ResNet's ``layer4.1``; units without
  parameters or running statistics (activations, pooling, dropout) are no step;
* their order is the forward pass read backwards: one forward of an example image records
  when each unit first runs; the last to run is randomised first (units that never run go
  first);
* the model's own parameters (not inside any child: a ViT's ``cls_token``, ``pos_embed``,
  register tokens) are one step, taken as the input-side embedding: randomised just before the
  first unit that runs (a ViT's ``patch_embed``), its name the parameters' names joined by ``,``.

ViT: ``head``, ``norm``, ``blocks.{depth-1}`` .. ``blocks.0``, ``cls_token,pos_embed``,
``patch_embed`` (depth + 4 steps; the multi-attention backbone with DRFF has ``drff`` after
``norm``). EfficientNet-Lite0: ``_fc``, ``_bn1``, ``_conv_head``, ``_blocks.15`` .. ``_blocks.0``,
``_bn0``, ``_conv_stem`` (21 steps). Quantus' ``ModelParameterRandomisation`` walks
``named_modules()`` backwards instead, which never reaches parameters held by the model itself.

Re-drawing (:func:`randomise_`), seeded per step, without touching the global RNG:

* every sub-module with ``reset_parameters()`` is reset (PyTorch's default initialisers);
* a parameter no module resets (tokens, position embeddings, relative position bias tables)
  is drawn from ``N(0, 0.02^2)`` (timm's initialisation of these);
* a parameter that the reset leaves constant or unchanged (a norm's scale 1 and shift 0, a
  zero bias) gets ``N(0, 0.02^2)`` noise added, so it is random too and the signal still
  flows (a scale of ``1 + N(0, 0.02^2)``, not 0);
* buffers are not parameters, but BatchNorm's running mean and variance are learnt from the
  training data: they are reset to their initial values (mean 0, variance 1, count 0), as
  ``reset_parameters`` does; every other buffer (index tables, fixed constants) is
  architecture, not learnt, and stays.

A method whose maps after *full* randomisation still have a Spearman correlation (absolute
maps) above :data:`~.similarity.SIMILARITY_THRESHOLD` (0.5) with the trained model's maps
"does not depend on the weights": it shows the image (edges, colour), not the model.

Cost per image: one forward + backward per cascade step (``len(cascade_steps(...))``), plus
one forward of one image per batch to read the order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..methods import compute_maps
from ..methods.base import Method
from .similarity import MEASURES, map_similarity

#: container types split into one cascade step per element (exact types: a subclass is a block)
CONTAINERS = (nn.ModuleList, nn.Sequential)


@dataclass(frozen=True)
class Step:
    """One cascade step: its ``name``, the modules and the model's own parameters it re-draws."""

    name: str
    modules: tuple[str, ...] = ()
    params: tuple[str, ...] = ()


def _learnt(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(callable(getattr(s, "reset_running_stats", None))
                                                     for s in m.modules())


def _units(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Top-level children, containers split into their elements (recursively), learnt ones only."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if type(child) in CONTAINERS:
            out += _units(child, full + ".")
        elif _learnt(child):
            out.append((full, child))
    return out


def _run_order(model: nn.Module, units: list[tuple[str, nn.Module]], example: torch.Tensor) -> dict[str, int]:
    """When each unit first runs in one forward of ``example`` ``[1, 3, H, W]`` (unit name -> call index),
    in eval mode (each module's mode is restored after)."""
    seen: dict[str, int] = {}
    handles = []
    modes = {m: m.training for m in model.modules()}

    def hook(name: str):
        def record(*_):
            seen.setdefault(name, len(seen))
        return record

    try:
        for name, m in units:
            handles.append(m.register_forward_pre_hook(hook(name)))
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return seen


def cascade_steps(model: nn.Module, example: torch.Tensor) -> list[Step]:
    """The cascade, top (output) first, for a model and an example input ``[1, 3, H, W]``; see the module doc."""
    units = _units(model)
    order = _run_order(model, units, example)
    never = [n for n, _ in reversed(units) if n not in order]
    ran = sorted(order, key=order.get, reverse=True)
    steps = [Step(n, modules=(n,)) for n in never + ran]
    prefixes = tuple(n + "." for n, _ in units)
    own = tuple(n for n, _ in model.named_parameters() if not n.startswith(prefixes))
    if own:
        at = len(never) + max(len(ran) - 1, 0)  # before the first unit to run (the input side)
        steps.insert(at, Step(",".join(own), params=own))
    return steps


def cascade_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the cascade steps, top first (:func:`cascade_steps`)."""
    return [s.name for s in cascade_steps(model, example)]


def randomise_(module: nn.Module, *, seed: int = 0, params: Sequence[str] | None = None) -> None:
    """Re-draw in place every learnt parameter of ``module`` and reset its running statistics, or
    re-draw only the parameters named in ``params`` (``module.get_parameter`` names); see the module doc."""
    targets = [module.get_parameter(n) for n in params] if params is not None else list(module.parameters())
    cuda = sorted({p.device.index or 0 for p in targets if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        before = {id(p): p.detach().clone() for p in targets}
        reset: set[int] = set()
        for m in module.modules() if params is None else ():
            if callable(getattr(m, "reset_running_stats", None)):
                m.reset_running_stats()
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                reset.update(id(p) for p in m.parameters(recurse=False))
        for p in targets:
            if not p.is_floating_point() or p.numel() == 0:
                continue
            if id(p) not in reset:
                p.normal_(0.0, 0.02)
            elif bool((p == p.reshape(-1)[0]).all()) or torch.equal(p, before[id(p)]):
                p.add_(torch.randn_like(p) * 0.02)


def randomised_models(model: nn.Module, steps: Sequence[Step], *, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yields ``(step name, model)`` after each step; one deep copy of ``model``, randomised in place
    cumulatively (step ``k`` seeded with ``seed + k``); ``model`` itself is never touched."""
    rand = copy.deepcopy(model).eval()
    modules = dict(rand.named_modules())
    for k, step in enumerate(steps):
        for name in step.modules:
            randomise_(modules[name], seed=seed + k)
        if step.params:
            randomise_(rand, seed=seed + k, params=step.params)
        yield step.name, rand


def randomisation_cascade(model: nn.Module, inputs: torch.Tensor, methods: Sequence[Method],
                          trained_maps: dict[str, torch.Tensor], targets: Sequence[int | None], *,
                          seed: int = 0, steps: Sequence[Step] | None = None) -> dict:
    """Similarity of each method's maps to the trained model's, after each cascade step.

    Args:
        inputs: ``[B, 3, H, W]``.
        methods: the method objects (their ``normalization`` is used for SSIM).
        trained_maps: ``{method: raw maps [B, h, w]}`` of the trained model (from the batch's pass).
        targets: the classes the trained maps explain (``None``: the engine's default target).
        steps: the cascade [default: :func:`cascade_steps` with the batch's first image].

    Returns:
        ``{"layers": [step names], "similarity": {method: {measure: float64 [L, B]}}}``.
    """
    steps = list(steps) if steps is not None else cascade_steps(model, inputs[:1])
    size = tuple(inputs.shape[-2:])
    norm = {m.name: m.normalization for m in methods}
    names = [m for m in trained_maps]
    sim = {m: {k: np.full((len(steps), inputs.shape[0]), np.nan) for k in MEASURES} for m in names}
    target = None if all(t is None for t in targets) else list(targets)
    active = [m for m in methods if m.name in trained_maps]
    for k, (_, rand) in enumerate(randomised_models(model, steps, seed=seed)):
        res = compute_maps(rand, inputs, active, target=target)
        for m in names:
            if m not in res.maps:
                continue
            for i in range(inputs.shape[0]):
                vals = map_similarity(trained_maps[m][i].numpy(), res.maps[m].maps[i].numpy(), size, norm[m])
                for key, v in vals.items():
                    sim[m][key][k, i] = v
    return {"layers": [s.name for s in steps], "similarity": sim}
