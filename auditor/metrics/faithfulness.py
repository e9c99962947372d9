"""Curve maths of the faithfulness checks (:mod:`auditor.faithfulness`): pure numpy.

The checks themselves run the model; what they measure is summarised here:

* :func:`removal_fractions` -- the grid ``0, 1/steps, ..., 1`` of removed (or inserted) pixels;
* :func:`curve_auc` -- area under a probability curve, trapezoid over the fraction ``0..1``;
* :func:`pixel_counts` -- how many pixels each fraction removes.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import positive_int

__all__ = ["curve_auc", "pixel_counts", "removal_fractions"]


def removal_fractions(steps: int) -> np.ndarray:
    """``[0, 1/steps, 2/steps, ..., 1]`` (float64, ``steps + 1`` values)."""
    steps = positive_int(steps, "steps")
    return np.arange(steps + 1, dtype=np.float64) / steps


def pixel_counts(fractions: np.ndarray, num_pixels: int) -> np.ndarray:
    """Pixels removed at each fraction: ``ceil(f * num_pixels)`` (exact for ``f = k / steps``)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or not np.all((f >= 0) & (f <= 1)):
        raise ValueError("fractions must be a 1-D array of values in [0, 1]")
    return np.minimum(np.ceil(f * num_pixels - 1e-9), num_pixels).astype(np.int64)


def curve_auc(values: np.ndarray, fractions: np.ndarray | None = None) -> float:
    """Area under a deletion / insertion curve, trapezoid rule over the fraction axis.

    ``values[k]`` is the target-class probability after removing (deletion) or inserting
    (insertion) the fraction ``fractions[k]`` of the pixels, most salient first; fractions
    default to an even grid from 0 to 1 (:func:`removal_fractions`), so the area is the mean
    probability with the two end points at half weight: ``(sum(v) - v[0]/2 - v[-1]/2) /
    steps``. This is the normalisation of the RISE authors' ``auc`` (Petsiuk et al., BMVC
    2018, github.com/eclique/RISE ``evaluation.py``). Quantus' ``PixelFlipping`` instead
    integrates its curve with ``dx = 1`` and without the unperturbed point (see
    ``tests/reference_faithfulness.json``).

    Returns
    -------
    float
        In ``[0, 1]`` for probabilities; NaN when any value is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"values must be a 1-D curve of at least 2 points, got shape {v.shape}")
    f = removal_fractions(v.size - 1) if fractions is None else np.asarray(fractions, dtype=np.float64)
    if f.shape != v.shape:
        raise ValueError(f"fractions {f.shape} and values {v.shape} must have the same shape")
    if np.isnan(v).any():
        return math.nan
    return float(np.sum((v[1:] + v[:-1]) * np.diff(f)) / 2)
