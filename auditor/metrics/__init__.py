"""Metrics: pure functions that score a saliency map against boxes, fixations or gaze.

Conventions shared by every metric (see each docstring for the formula and paper):

* arguments: ``(saliency, reference)``, both ``[H, W]`` of the same shape, options
  keyword-only; inputs are validated first (``ValueError`` saying what to do) and the
  computation runs in float64;
* an empty mask or no fixations is an input error (``ValueError``); a map for which the
  metric is undefined (e.g. constant saliency for NSS / CC) gives ``float('nan')``.

Registries used by the audit runner, each ``name -> fn(saliency, reference)``:

* :data:`BOX_METRICS`: reference is a boolean object mask (union of boxes);
* :data:`FIXATION_METRICS`: reference is a boolean fixation map;
* :data:`DENSITY_METRICS`: reference is a non-negative gaze density.

:data:`HIGHER_IS_BETTER` gives each metric's direction (``kl_div`` and the faithfulness checks'
``deletion_auc`` / ``deletion_auc_normalised``, ``road_morf``, ``randomisation_*`` and
``random_target_*`` are lower-is-better; ``deletion_vs_random`` is higher-is-better).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import agreement, baselines, faithfulness, gaze, localisation, stats
from .agreement import spearman, top_k_overlap
from .baselines import centre_gaussian, uniform_random
from .gaze import auc_borji, auc_judd, cc, fixations_to_map, kl_div, nss, sim
from .localisation import auc_roc, pointing_game, relevance_mass, relevance_rank
from .stats import Summary, bootstrap_ci, paired_bootstrap_ci, paired_permutation_test, wilson_ci

Metric = Callable[[np.ndarray, np.ndarray], "float | bool"]

BOX_METRICS: dict[str, Metric] = {
    "pointing_game": pointing_game,
    "relevance_mass": relevance_mass,
    "relevance_rank": relevance_rank,
    "auc_roc": auc_roc,
}
FIXATION_METRICS: dict[str, Metric] = {"nss": nss, "auc_judd": auc_judd, "auc_borji": auc_borji}
DENSITY_METRICS: dict[str, Metric] = {"cc": cc, "kl_div": kl_div, "sim": sim}

HIGHER_IS_BETTER: dict[str, bool] = {
    **{name: True for name in (*BOX_METRICS, *FIXATION_METRICS, *DENSITY_METRICS)},
    "kl_div": False,
    "completeness_error": False,  # integrated gradients' |sum(attributions) - score difference|
    "spearman": True,
    "top_k_overlap": True,
    # faithfulness and sanity checks (auditor.faithfulness): similarity after randomisation or
    # for another class, and the probability left after deleting the salient pixels, are bad
    "deletion_auc": False,
    "insertion_auc": True,
    "deletion_auc_normalised": False,
    "insertion_auc_normalised": True,
    "deletion_vs_random": True,  # area by which the map's order beats a random order
    "insertion_vs_random": True,
    "road_morf": False,
    "road_lerf": True,
    **{f"randomisation_{k}": False for k in ("spearman", "spearman_signed", "spearman_normalised", "ssim")},
    "random_target_spearman": False,
    "random_target_ssim": False,
}

#: metrics whose per-image value is a hit or a miss: summarised as a proportion with a Wilson interval
BINARY_METRICS = frozenset({"pointing_game"})

#: the values a metric can take, ``(low, high)``; thresholds outside are refused before an audit runs
METRIC_RANGES: dict[str, tuple[float, float]] = {
    **{name: (0.0, 1.0) for name in ("pointing_game", "relevance_mass", "relevance_rank", "auc_roc", "auc_judd",
                                     "auc_borji", "sim", "top_k_overlap")},
    "cc": (-1.0, 1.0), "spearman": (-1.0, 1.0), "nss": (-np.inf, np.inf), "kl_div": (0.0, np.inf),
}


def metric_range(name: str) -> tuple[float, float]:
    """``(low, high)`` of metric ``name`` (unbounded when not listed)."""
    return METRIC_RANGES.get(name, (-np.inf, np.inf))


__all__ = [
    "BINARY_METRICS", "METRIC_RANGES", "metric_range", "wilson_ci",
    "BOX_METRICS", "DENSITY_METRICS", "FIXATION_METRICS", "HIGHER_IS_BETTER", "Metric", "Summary",
    "agreement", "auc_borji", "faithfulness", "auc_judd", "auc_roc", "baselines", "bootstrap_ci", "cc", "centre_gaussian",
    "fixations_to_map", "gaze", "kl_div", "localisation", "nss", "paired_bootstrap_ci", "paired_permutation_test",
    "pointing_game", "relevance_mass", "relevance_rank", "sim", "spearman", "stats", "top_k_overlap",
    "uniform_random",
]
