"""How similar two maps of the same image are, for the sanity checks (Adebayo et al. 2018).

Maps are compared at the model's input resolution (raw maps upsampled bilinearly):

* ``spearman``: Spearman rank correlation of the *absolute* maps (a sign flip is not a
  change: Adebayo et al. report both, and gradient signs flip freely);
* ``spearman_signed``: of the signed raw maps;
* ``spearman_normalised``: of the maps as the method normalises them for scoring and display
  (:class:`auditor.maps.PostProcess`; Grad-CAM's ReLU included) -- what a reader sees;
* ``ssim``: structural similarity (``skimage.metrics.structural_similarity``, 7 x 7
  window, ``data_range=1``) of the maps normalised as the method is for scoring
  (:class:`auditor.maps.PostProcess`).

Constant maps give NaN Spearman values (rank correlation undefined).
"""

from __future__ import annotations

import math

import numpy as np

from .. import maps as maplib
from ..metrics.agreement import spearman

MEASURES = ("spearman", "spearman_signed", "spearman_normalised", "ssim")
#: above this Spearman (absolute maps), a map after full randomisation, or for another class, counts as "the same"
SIMILARITY_THRESHOLD = 0.5


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return math.nan
    return float(structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1.0, win_size=win))


def _safe_spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearman(a, b))


def map_similarity(raw_a: np.ndarray, raw_b: np.ndarray, size: tuple[int, int], normalization: str) -> dict[str, float]:
    """``{"spearman", "spearman_signed", "ssim"}`` of two raw maps ``[h, w]`` at ``size``."""
    a, b = maplib.upsample(raw_a, size).astype(np.float64), maplib.upsample(raw_b, size).astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return {k: math.nan for k in MEASURES}
    post = maplib.PostProcess.from_mode(normalization)
    na, nb = post(raw_a, size), post(raw_b, size)
    return {"spearman": _safe_spearman(np.abs(a), np.abs(b)), "spearman_signed": _safe_spearman(a, b),
            "spearman_normalised": _safe_spearman(na, nb), "ssim": _ssim(na, nb)}
