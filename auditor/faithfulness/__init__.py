"""Faithfulness and sanity checks: is a map telling the truth about the model?

Agreement with boxes and gaze asks whether the model looks where a person would; these
checks ask whether the *map* reflects the model at all (Adebayo et al., "Sanity Checks
for Saliency Maps", NeurIPS 2018). They need extra forward passes by definition, so the
runner calls :func:`run_checks` after a batch's maps are computed, reusing the batch's
inputs and raw maps, only when asked (``auditor run --faithfulness ...``).

Registry (``CHECKS``: name -> per-image metrics it adds under ``metrics[method]``):

==============  ===============================================  ==========================================
check           metrics                                          extra passes per image
==============  ===============================================  ==========================================
deletion        ``deletion_vs_random`` (higher is better),       ``steps + 1`` forwards per method, and
                ``deletion_auc_normalised``, ``deletion_auc``    ``steps + 1`` for the random order
                (lower is better)                                (shared by all methods)
insertion       ``insertion_vs_random``,                         as deletion
                ``insertion_auc_normalised``, ``insertion_auc``
                (higher is better)
road            ``road_morf`` (lower), ``road_lerf`` (higher)    ``2 (steps - 1)`` forwards + sparse solves
randomisation   ``randomisation_spearman`` / ``_signed`` /       one forward + backward per cascade step
                ``_ssim`` (lower is better)                      (ViT: depth + 4)
random_target   ``random_target_spearman`` / ``_ssim`` (lower)   one forward + backward
==============  ===============================================  ==========================================

(Forward passes of the perturbed inputs are batched, ``forward_batch`` at a time; the
randomisation and random-target passes run all methods at once.)

Deletion / insertion (:mod:`.deletion`): ``*_auc`` is the raw area under the target-class
probability (RISE); ``*_auc_normalised`` the area of the curve divided by the unperturbed
image's probability (deletion starts at 1, insertion ends at 1); ``*_vs_random`` the area
between the normalised curve of a seeded random pixel order and the map's (deletion: random -
map, insertion: map - random), 0 when the map is no better than chance. The gate and the report
should read ``*_vs_random``: the raw area rewards a less confident model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import AuditorError, UsageError
from ..methods.base import Method
from ..methods.engine import PassResult, is_headless
from ..metrics.faithfulness import curve_scores, normalised_curve, removal_fractions
from ..metrics.stats import bootstrap_ci
from . import deletion, random_target, randomisation, road
from ._common import BASELINES, FORWARD_BATCH, input_saliency
from .deletion import deletion_insertion, perturbation_curves, random_order_curves, random_order_saliency
from .random_target import other_classes
from .randomisation import cascade_layers, cascade_steps, randomisation_cascade, randomise_, randomised_models
from .road import noisy_linear_impute, road_curves, road_fractions
from .similarity import SIMILARITY_THRESHOLD, map_similarity

CHECKS: dict[str, tuple[str, ...]] = {
    "deletion": ("deletion_vs_random", "deletion_auc_normalised", "deletion_auc"),
    "insertion": ("insertion_vs_random", "insertion_auc_normalised", "insertion_auc"),
    "road": ("road_morf", "road_lerf"),
    "randomisation": ("randomisation_spearman", "randomisation_spearman_signed", "randomisation_spearman_normalised",
                      "randomisation_ssim"),
    "random_target": ("random_target_spearman", "random_target_ssim"),
}
#: extra passes per image, for ``--help`` and the docs
COST = {
    "deletion": "steps+1 forwards per method + steps+1 for the random-order reference",
    "insertion": "steps+1 forwards per method + steps+1 for the random-order reference",
    "road": "2(steps-1) forwards + as many sparse solves",
    "randomisation": "1 forward+backward per cascade step (ViT: depth+4)",
    "random_target": "1 forward+backward",
}


def list_checks() -> list[str]:
    return list(CHECKS)


def parse_checks(spec: str | Sequence[str] | None) -> list[str]:
    """``"deletion,road"`` or a list -> validated check names (``"all"``: every check)."""
    if not spec:
        return []
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if names == ["all"]:
        return list_checks()
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise UsageError(f"unknown faithfulness check(s) {', '.join(bad)}: use any of {', '.join(CHECKS)} (or 'all')")
    return list(dict.fromkeys(names))


@dataclass
class FaithfulnessOptions:
    """What to run and how (recorded in ``settings["faithfulness"]``)."""

    checks: list[str] = field(default_factory=list)
    steps: int = 10
    baseline: str = "blur"
    road_noise: float = 0.01
    seed: int = 0
    forward_batch: int = FORWARD_BATCH
    threshold: float = SIMILARITY_THRESHOLD

    def __post_init__(self) -> None:
        self.checks = parse_checks(self.checks)
        if self.baseline not in BASELINES:
            raise UsageError(f"unknown faithfulness baseline '{self.baseline}': use one of {', '.join(BASELINES)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise UsageError(f"faithfulness steps must be an integer >= 2, got {self.steps!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auc"] = "trapezoid over the removed fraction 0..1 (RISE normalisation)"
        d["normalised"] = "curve / target probability of the unperturbed image (deletion starts at 1, insertion ends at 1)"
        d["random_order"] = "one seeded uniformly random pixel permutation, the same for every image"
        d["vs_random"] = "deletion: auc(random) - auc(map), insertion: auc(map) - auc(random), normalised curves"
        d["road_fractions"] = "k/steps, k = 1..steps-1"
        return d


@dataclass
class BatchChecks:
    """One batch's results: per-image metrics, curves and cascade similarities, skip reasons."""

    metrics: list[dict[str, dict[str, float]]]
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> curve -> [B, K]
    reference: dict[str, np.ndarray] = field(default_factory=dict)  # random order: curve -> [B, K]
    cascade: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> measure -> [L, B]
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def run_checks(model: nn.Module, inputs: torch.Tensor, res: PassResult, methods: Sequence[Method],
               options: FaithfulnessOptions) -> BatchChecks:
    """Every requested check for one batch, reusing its inputs ``[B, 3, H, W]`` and raw maps."""
    b = inputs.shape[0]
    out = BatchChecks(metrics=[{m: {} for m in res.maps} for _ in range(b)])
    if not options.checks or not res.maps:
        return out
    objs = {m.name: m for m in methods if m.name in res.maps}
    size = tuple(inputs.shape[-2:])
    targets = list(res.targets)
    class_targets = not is_headless(model) and all(t is not None for t in targets)
    opts = dict(seed=options.seed, forward_batch=options.forward_batch)

    def put(method: str, name: str, values: np.ndarray) -> None:
        for i in range(b):
            out.metrics[i][method][name] = float(values[i])

    perturbation = [c for c in ("deletion", "insertion", "road") if c in options.checks]
    if perturbation and not class_targets:
        for c in perturbation:
            out.skipped[c] = "needs class probabilities: the model has no class head (or no class target)"
        perturbation = []
    for mode in ("deletion", "insertion"):
        if mode in perturbation:
            c = random_order_curves(model, inputs, targets, mode=mode, steps=options.steps, baseline=options.baseline,
                                    **opts)
            out.reference.update({mode: c, f"{mode}_normalised": normalised_curve(c, mode)})
    for name, method in objs.items():
        raw = res.maps[name].maps
        if not perturbation:
            break
        sal = input_saliency(raw, size, method.normalization)
        flat = np.array([np.ptp(s) == 0 for s in sal])  # a constant map orders nothing: NaN
        curves = out.curves.setdefault(name, {})
        for mode in ("deletion", "insertion"):
            if mode in perturbation:
                c = perturbation_curves(model, inputs, sal, targets, mode=mode, steps=options.steps,
                                        baseline=options.baseline, **opts)
                c[flat] = np.nan
                scores = curve_scores(c, out.reference[mode], mode)
                curves.update({mode: c, f"{mode}_normalised": scores.pop(f"{mode}_normalised")})
                for k, v in scores.items():
                    put(name, k, v)
        if "road" in perturbation:
            for order in road.ORDERS:
                c = road_curves(model, inputs, sal, targets, order=order, steps=options.steps,
                                noise=options.road_noise, **opts)
                c[flat] = np.nan
                curves[f"road_{order}"] = c
                put(name, f"road_{order}", c.mean(1))
    if "randomisation" in options.checks:
        casc = randomisation_cascade(model, inputs, list(objs.values()), {m: r.maps for m, r in res.maps.items()},
                                     targets if class_targets else [None] * b, seed=options.seed)
        out.layers = casc["layers"]
        for m, sims in casc["similarity"].items():
            out.cascade[m] = sims
            for k, v in sims.items():
                put(m, "randomisation_" + k, v[-1] if len(v) else np.full(b, np.nan))
    if "random_target" in options.checks:
        try:
            rt = random_target.random_target(model, inputs, list(objs.values()), {m: r.maps for m, r in res.maps.items()},
                                             targets, num_classes=int(res.output.shape[-1]), seed=options.seed)
            for m, sims in rt["similarity"].items():
                put(m, "random_target_spearman", sims["spearman_normalised"])
                put(m, "random_target_ssim", sims["ssim"])
        except AuditorError as e:
            out.skipped["random_target"] = str(e)
    return out


def save_part(batch: BatchChecks, path: str | Path) -> None:
    """One batch's curves and cascade as ``.npz`` (so a resumed run can rebuild the section)."""
    arrays: dict[str, np.ndarray] = {"layers": np.asarray(batch.layers, dtype=str),
                                     "skipped": np.asarray(json.dumps(batch.skipped))}
    for m, cs in batch.curves.items():
        arrays.update({f"curve/{m}/{k}": v for k, v in cs.items()})
    for m, sims in batch.cascade.items():
        arrays.update({f"cascade/{m}/{k}": v for k, v in sims.items()})
    arrays.update({f"reference/random_order/{k}": v for k, v in batch.reference.items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_part(path: str | Path) -> BatchChecks:
    out = BatchChecks(metrics=[])
    with np.load(path) as z:
        out.layers = [str(v) for v in z["layers"]]
        out.skipped = json.loads(str(z["skipped"]))
        for key in z.files:
            kind, _, rest = key.partition("/")
            m, _, k = rest.rpartition("/")
            if kind == "curve":
                out.curves.setdefault(m, {})[k] = z[key]
            elif kind == "cascade":
                out.cascade.setdefault(m, {})[k] = z[key]
            elif kind == "reference":
                out.reference[k] = z[key]
    return out


class Accumulator:
    """Collects the batches' curves and cascades; :meth:`section` is results.json's ``faithfulness``."""

    def __init__(self, options: FaithfulnessOptions):
        self.options = options
        self.curves: dict[str, dict[str, list[np.ndarray]]] = {}
        self.cascade: dict[str, dict[str, list[np.ndarray]]] = {}
        self.reference: dict[str, list[np.ndarray]] = {}
        self.layers: list[str] = []
        self.skipped: dict[str, str] = {}

    def add(self, batch: BatchChecks) -> None:
        for m, cs in batch.curves.items():
            for k, v in cs.items():
                self.curves.setdefault(m, {}).setdefault(k, []).append(v)
        for m, sims in batch.cascade.items():
            for k, v in sims.items():
                self.cascade.setdefault(m, {}).setdefault(k, []).append(v)
        for k, v in batch.reference.items():
            self.reference.setdefault(k, []).append(v)
        self.layers = self.layers or batch.layers
        self.skipped.update(batch.skipped)

    def section(self, *, seed: int = 0) -> dict[str, Any]:
        o = self.options
        fr = removal_fractions(o.steps).tolist()
        road_fr = road_fractions(o.steps).tolist() if o.steps >= 2 else []
        curves = {m: {k: {"fractions": road_fr if k.startswith("road") else fr,
                          **_band(np.concatenate(v, axis=0), seed)} for k, v in cs.items()}
                  for m, cs in self.curves.items()}
        rand = {}
        for m, sims in self.cascade.items():
            per = {k: _band(np.concatenate(v, axis=1).T, seed) for k, v in sims.items()}  # images x layers
            final = per["spearman"]["mean"][-1] if per["spearman"]["mean"] else None
            rand[m] = {"layers": self.layers, **per,
                       "weight_independent": bool(final is not None and final > o.threshold)}
        reference = {k: {"fractions": fr, **_band(np.concatenate(v, axis=0), seed)} for k, v in self.reference.items()}
        return {"checks": o.checks, "threshold": o.threshold, "curves": curves, "random_order": reference,
                "randomisation": rand, "skipped": self.skipped}


def _band(values: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean and 95% bootstrap CI of each column of ``[N, K]`` (finite values only)."""
    stats = [bootstrap_ci(values[:, k], seed=seed) for k in range(values.shape[1])]
    return {"mean": [s.mean for s in stats], "ci_low": [s.ci_low for s in stats], "ci_high": [s.ci_high for s in stats],
            "n": int(max((s.n for s in stats), default=0))}


__all__ = [
    "Accumulator", "BASELINES", "BatchChecks", "CHECKS", "COST", "FaithfulnessOptions", "SIMILARITY_THRESHOLD",
    "cascade_layers", "cascade_steps", "deletion", "deletion_insertion", "list_checks", "map_similarity", "noisy_linear_impute",
    "other_classes", "parse_checks", "perturbation_curves", "random_order_curves", "random_order_saliency", "random_target", "randomisation", "randomisation_cascade",
    "randomise_", "randomised_models", "road", "road_curves", "road_fractions", "run_checks", "load_part", "save_part",
]
