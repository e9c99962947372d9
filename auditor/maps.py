"""From raw method maps to maps at image resolution: upsampling and normalisation.

Two explicit steps, both recorded in results:

1. :func:`upsample` -- raw ``[B, h, w]`` token/feature maps to the image's ``H x W``
   (bilinear, ``align_corners=False``: each token's value sits at its patch centre). The
   model sees the whole image resized (no crop), so the grid spans the whole image.
2. :func:`normalize` -- ``"minmax"`` to ``[0, 1]``; ``"relu_minmax"`` (Grad-CAM's ReLU
   first); ``"none"``. A constant map normalises to all zeros (documented, tested).

:func:`to_image` does both in the order of the Grad-CAM paper and pytorch-grad-cam: the
ReLU at the map's own (token / feature) resolution, then upsampling, then min-max. (ReLU
after upsampling would differ wherever neighbouring tokens change sign.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NORMALIZATIONS = ("minmax", "relu_minmax", "none")


def upsample(maps: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[B, h, w]`` or ``[h, w]`` -> float32 ``[B, H, W]`` / ``[H, W]`` at ``size = (H, W)``."""
    t = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    single = t.ndim == 2
    if single:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected maps of shape [B, h, w] or [h, w], got {tuple(t.shape)}")
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    out = t.cpu().numpy().astype(np.float32, copy=False)
    return out[0] if single else out


def normalize(saliency: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Scale a map to ``[0, 1]`` for display and scoring (float32, same shape).

    ``"minmax"``: ``(s - min) / (max - min)``. ``"relu_minmax"``: negative values set to 0
    first (Grad-CAM keeps only positive evidence). ``"none"``: unchanged. A constant map
    (``max == min`` after the ReLU) becomes all zeros; NaN / inf values raise ValueError.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {mode!r}")
    s = np.asarray(saliency, dtype=np.float64)
    if not np.isfinite(s).all():
        raise ValueError("map has NaN or infinite values")
    if mode == "none":
        return s.astype(np.float32)
    if mode == "relu_minmax":
        s = np.maximum(s, 0.0)
    lo, hi = s.min(), s.max()
    if hi <= lo:
        return np.zeros(s.shape, dtype=np.float32)
    return ((s - lo) / (hi - lo)).astype(np.float32)


def map_problem(saliency: np.ndarray, mode: str = "minmax") -> str | None:
    """Why a raw map cannot be scored (``"non-finite values"``, ``"constant map"``) or None."""
    s = np.asarray(saliency)
    if not np.isfinite(s).all():
        return "the map has NaN or infinite values"
    if mode == "relu_minmax":
        s = np.maximum(s, 0)
    if s.size == 0 or s.max() <= s.min():
        return "the map is constant (e.g. zero gradients): nothing to localise"
    return None


def to_image(raw: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "minmax") -> np.ndarray:
    """Raw map ``[h, w]`` -> display / scoring map ``[H, W]`` in ``[0, 1]`` (float32).

    ``relu_minmax``: ReLU at ``[h, w]``, bilinear upsampling, then min-max (as
    pytorch-grad-cam's ``scale_cam_image``); other modes upsample then normalise.
    """
    return to_images(np.asarray(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw)[None], size, mode)[0]


def to_images(raw: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "minmax") -> np.ndarray:
    """:func:`to_image` of each map of ``raw`` ``[L, h, w]`` -> ``[L, H, W]``, upsampled in one call."""
    raw = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    if mode == "relu_minmax":
        raw, mode = np.maximum(raw, 0), "minmax"
    up = upsample(raw, size)
    return np.stack([normalize(u, mode) for u in up]) if len(up) else up
