"""Reference maps every audited method should beat: a centre prior and uniform noise.

Both are plain float64 ``[H, W]`` arrays scored with the same metrics as a method's map
(the audit runner adds them as the ``centre`` and ``random`` rows).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._validate import positive_float, shape_hw


def centre_gaussian(shape: Sequence[int], *, sigma_frac: float = 0.25) -> np.ndarray:
    """Gaussian centre-bias map, peak 1 at the image centre.

    ``G[r, c] = exp(-((r - cy)**2 / (2 sy**2) + (c - cx)**2 / (2 sx**2)))`` with the centre
    ``cy = (H - 1) / 2``, ``cx = (W - 1) / 2`` (pixel centres at integers) and one sigma per
    side, ``sy = sigma_frac * H``, ``sx = sigma_frac * W``: isotropic in coordinates
    normalised by the image size, so elongated on a non-square image. Divided by its
    maximum, so the largest value is exactly 1 (for an even side the centre falls between
    pixels).

    Parameters
    ----------
    shape : (H, W)
        Size of the map.
    sigma_frac : float, default 0.25
        Standard deviation as a fraction of each side, > 0.

    Returns
    -------
    ndarray of float64, shape (H, W)
        Values in ``(0, 1]``.

    References
    ----------
    Tatler, "The central fixation bias in scene viewing", Journal of Vision 7(14), 2007;
    Judd et al., "Learning to predict where humans look", ICCV 2009 (centre baseline).
    """
    h, w = shape_hw(shape)
    frac = positive_float(sigma_frac, "sigma_frac")
    gy = np.exp(-0.5 * ((np.arange(h) - (h - 1) / 2.0) / (frac * h)) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w) - (w - 1) / 2.0) / (frac * w)) ** 2)
    g = np.outer(gy, gx)
    return g / g.max()


def uniform_random(shape: Sequence[int], *, seed: int) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` from ``np.random.default_rng(seed).random((H, W))``.

    Parameters
    ----------
    shape : (H, W)
        Size of the map.
    seed : int
        Required, so every run scores the same noise (the runner derives it from the image id).

    Returns
    -------
    ndarray of float64, shape (H, W)
    """
    h, w = shape_hw(shape)
    return np.random.default_rng(seed).random((h, w))
