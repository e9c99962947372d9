"""From raw method maps to maps at image resolution: upsampling and normalisation.

Two explicit steps, both recorded in results:

1. :func:`upsample` -- raw ``[B, h, w]`` token/feature maps to the image's ``H x W``
   (bilinear, ``align_corners=False``: each token's value sits at its patch centre). The
   model sees the whole image resized (no crop), so the grid spans the whole image.
2. :func:`normalize` -- ``"minmax"`` to ``[0, 1]``; ``"relu_minmax"`` (Grad-CAM's ReLU
   first); ``"none"``. A constant map normalises to all zeros (documented, tested).

:class:`PostProcess` does both in the order of the Grad-CAM paper and pytorch-grad-cam: the
ReLU at the map's own (token / feature) resolution, then upsampling, then min-max. (ReLU
after upsampling would differ wherever neighbouring tokens change sign.) It is the one path
every consumer takes (scoring, baselines, report, compare, faithfulness, visualize);
:func:`to_image` is a shorthand for it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    A primitive on a map already at its final size: to go from a raw token map to the scored
    map use :class:`PostProcess`, which applies the ReLU before upsampling.
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
    return PostProcess.from_mode(mode).problem(saliency)


@dataclass(frozen=True)
class PostProcess:
    """Raw map -> (ReLU) -> upsample -> normalise: the one path from a method's map to the
    map that is scored, drawn, compared and perturbed.

    Every consumer goes through it: scoring (:func:`auditor.scoring.score_item`, baselines
    included), the report's overlays, compare's map agreement, the faithfulness checks and
    ``auditor visualize``; so the picture is the scored map. The order is Grad-CAM's (and
    pytorch-grad-cam's ``scale_cam_image``): ReLU at the map's own token / feature
    resolution, then bilinear upsampling (``align_corners=False``), then min-max.

    Attributes
    ----------
    relu : bool, default False
        Set negative values to 0 before upsampling (Grad-CAM keeps positive evidence only).
    upsample : str, default "bilinear"
        The only interpolation offered; recorded so a reader knows.
    normalize : str, default "minmax"
        ``"minmax"`` to ``[0, 1]`` (a constant map becomes all zeros) or ``"none"``.
    """

    relu: bool = False
    upsample: str = "bilinear"
    normalize: str = "minmax"

    def __post_init__(self) -> None:
        if self.upsample != "bilinear" or self.normalize not in ("minmax", "none"):
            raise ValueError(f"post-processing supports upsample='bilinear' and normalize in ('minmax', 'none'), "
                             f"got upsample={self.upsample!r}, normalize={self.normalize!r}")

    @classmethod
    def from_mode(cls, mode: "str | PostProcess") -> "PostProcess":
        """From a method's recorded ``normalization`` (``"minmax"``, ``"relu_minmax"``, ``"none"``)."""
        if isinstance(mode, PostProcess):
            return mode
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {mode!r}")
        return cls(relu=mode == "relu_minmax", normalize="none" if mode == "none" else "minmax")

    @property
    def mode(self) -> str:
        """The legacy ``normalization`` name (results' ``settings.methods[m].normalization``)."""
        if self.normalize == "none":
            return "none"
        return "relu_minmax" if self.relu else "minmax"

    def to_dict(self) -> dict[str, object]:
        """What results record: ``{"relu": bool, "upsample": "bilinear", "normalize": "minmax"}``."""
        return {"relu": self.relu, "upsample": self.upsample, "normalize": self.normalize}

    def problem(self, raw: torch.Tensor | np.ndarray) -> str | None:
        """Why ``raw`` cannot be scored (non-finite, or constant after the ReLU), else None."""
        s = _numpy(raw)
        if not np.isfinite(s).all():
            return "the map has NaN or infinite values"
        if self.relu:
            s = np.maximum(s, 0)
        if s.size == 0 or s.max() <= s.min():
            return "the map is constant (e.g. zero gradients): nothing to localise"
        return None

    def token_map(self, raw: torch.Tensor | np.ndarray) -> np.ndarray:
        """ReLU and normalise at the map's own resolution (a patch grid's tints), float32 ``[h, w]``."""
        s = _numpy(raw)
        return normalize(np.maximum(s, 0) if self.relu else s, self.normalize)

    def __call__(self, raw: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Raw ``[h, w]`` -> float32 ``[H, W]`` at ``size``; ``[L, h, w]`` -> ``[L, H, W]`` (one upsampling)."""
        s = _numpy(raw)
        if self.relu:
            s = np.maximum(s, 0)
        up = upsample(s, size)
        if up.ndim == 2:
            return normalize(up, self.normalize)
        return np.stack([normalize(u, self.normalize) for u in up]) if len(up) else up


#: what the centre and random baselines go through (they are non-negative: a ReLU would change nothing)
BASELINE_POSTPROCESS = PostProcess()


def _numpy(raw: torch.Tensor | np.ndarray) -> np.ndarray:
    return raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)


def to_image(raw: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "minmax") -> np.ndarray:
    """Raw map ``[h, w]`` -> map ``[H, W]`` in ``[0, 1]`` (float32): ``PostProcess.from_mode(mode)(raw, size)``."""
    return PostProcess.from_mode(mode)(_numpy(raw), size)


def to_images(raw: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "minmax") -> np.ndarray:
    """:func:`to_image` of each map of ``raw`` ``[L, h, w]`` -> ``[L, H, W]``, upsampled in one call."""
    return PostProcess.from_mode(mode)(_numpy(raw), size)
