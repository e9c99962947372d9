"""From raw method maps to maps at image resolution: upsampling and normalisation.

Two explicit steps, both recorded in results:

1. :func:`upsample` -- raw ``[B, h, w]`` token/feature maps to the image's ``H x W``
   (bilinear, ``align_corners=False``: each token's value sits at its patch centre). With a
   squash resize the grid spans the whole image. With a centre crop (``region``, see
   :meth:`auditor.preprocess.Preprocess.region`) the grid spans the crop only, and every pixel
   outside it -- "no evidence": the model never saw it -- takes the map's lowest value inside
   the crop, so after min-max it is 0, the bottom of every ranking (AUC, NSS, top-k) and no mass
   (relevance mass, density metrics). References wholly outside the crop are not scored
   (:func:`auditor.scoring.score_item`: NaN with the reason).
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


Region = tuple[float, float, float, float]


def upsample(maps: torch.Tensor | np.ndarray, size: tuple[int, int], region: Region | None = None) -> np.ndarray:
    """``[B, h, w]`` or ``[h, w]`` -> float32 ``[B, H, W]`` / ``[H, W]`` at ``size = (H, W)``.

    ``region``: ``(x0, y0, x1, y1)`` fractions of the width / height that the grid spans (a
    centre crop); pixels whose centre lies outside take each map's lowest value inside.
    """
    t = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    single = t.ndim == 2
    if single:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected maps of shape [B, h, w] or [h, w], got {tuple(t.shape)}")
    if region is not None:
        out = _place(t.cpu().numpy().astype(np.float64), size, region)
    else:
        if tuple(t.shape[-2:]) != tuple(size):
            t = F.interpolate(t[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        out = t.cpu().numpy().astype(np.float32, copy=False)
    return out[0] if single else out


def _axis(n_in: int, n_out: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights ``[n_out, n_in]`` of ``n_in`` cells spanning output pixels ``[lo, hi)``
    (``align_corners=False``, clamped at the edges, as ``F.interpolate``), and which output
    pixels' centres lie inside (at least the one nearest the span's middle)."""
    centre = np.arange(n_out) + 0.5
    inside = (centre >= lo) & (centre < hi)
    if not inside.any():
        inside[int(np.clip(np.floor((lo + hi) / 2), 0, n_out - 1))] = True
    src = np.clip((centre - lo) / (hi - lo) * n_in - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(w, (rows, i0), 1 - frac)
    np.add.at(w, (rows, i1), frac)
    return w, inside


def region_mask(size: tuple[int, int], region: Region | None) -> np.ndarray | None:
    """bool ``[H, W]``: the pixels of an image at ``size`` that the model saw (None: all of them)."""
    if region is None:
        return None
    h, w = size
    _, ys = _axis(1, h, region[1] * h, region[3] * h)
    _, xs = _axis(1, w, region[0] * w, region[2] * w)
    return ys[:, None] & xs[None, :]


def _place(maps: np.ndarray, size: tuple[int, int], region: Region) -> np.ndarray:
    """``[B, h, w]`` float64 -> float32 ``[B, H, W]``: bilinear over the region, each map's
    lowest inside value outside it."""
    (b, h, w), (H, W) = maps.shape, size
    wy, ys = _axis(h, H, region[1] * H, region[3] * H)
    wx, xs = _axis(w, W, region[0] * W, region[2] * W)
    out = np.einsum("yh,bhw,xw->byx", wy, maps, wx)
    inside = ys[:, None] & xs[None, :]
    if b:
        low = out[:, inside].min(axis=1)
        out[:, ~inside] = low[:, None]
    return out.astype(np.float32)


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

    def __call__(self, raw: torch.Tensor | np.ndarray, size: tuple[int, int],
                 region: Region | None = None) -> np.ndarray:
        """Raw ``[h, w]`` -> float32 ``[H, W]`` at ``size``; ``[L, h, w]`` -> ``[L, H, W]`` (one upsampling).
        ``region``: the centre crop the map covers (:func:`upsample`; 0 outside after min-max)."""
        s = _numpy(raw)
        if self.relu:
            s = np.maximum(s, 0)
        up = upsample(s, size, region)
        if up.ndim == 2:
            return normalize(up, self.normalize)
        return _normalize_rows(up, self.normalize)

    def problems(self, raw: torch.Tensor | np.ndarray) -> list[str | None]:
        """:meth:`problem` of each map of ``raw`` ``[L, h, w]``, in one pass over all of them."""
        s = _numpy(raw)
        rows = s.reshape(len(s), -1)
        finite = np.isfinite(rows).all(1)
        if self.relu:
            rows = np.maximum(rows, 0)
        with np.errstate(invalid="ignore"):  # NaN rows: not scorable, named by problem()
            fine = finite & (rows.max(1, initial=-np.inf) > rows.min(1, initial=np.inf))
        return [None if ok else self.problem(m) for m, ok in zip(s, fine)]


def _normalize_rows(maps: np.ndarray, mode: str) -> np.ndarray:
    """:func:`normalize` (``"minmax"`` or ``"none"``) of each map of float32 ``maps`` ``[L, H, W]``, as
    one float64 array: each element computed as :func:`normalize` computes it (min and max are exact
    in float32, ``(s - lo) / (hi - lo)`` elementwise), so the same float32 values."""
    if not len(maps):
        return maps
    rows = maps.reshape(len(maps), -1)
    if not np.isfinite(rows).all():
        raise ValueError("map has NaN or infinite values")
    s = rows.astype(np.float64)
    if mode == "none":
        return s.astype(np.float32).reshape(maps.shape)
    lo, hi = rows.min(1).astype(np.float64)[:, None], rows.max(1).astype(np.float64)[:, None]
    flat = (hi <= lo)[:, 0]
    with np.errstate(invalid="ignore"):
        s -= lo
        s /= hi - lo
    s[flat] = 0.0
    return s.astype(np.float32).reshape(maps.shape)


#: what the centre and random baselines go through (they are non-negative: a ReLU would change nothing)
BASELINE_POSTPROCESS = PostProcess()


def _numpy(raw: torch.Tensor | np.ndarray) -> np.ndarray:
    return raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)


def to_image(raw: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "minmax",
             region: Region | None = None) -> np.ndarray:
    """Raw map ``[h, w]`` -> map ``[H, W]`` in ``[0, 1]`` (float32): ``PostProcess.from_mode(mode)(raw, size, region)``."""
    return PostProcess.from_mode(mode)(_numpy(raw), size, region)


def to_images(raw: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "minmax") -> np.ndarray:
    """:func:`to_image` of each map of ``raw`` ``[L, h, w]`` -> ``[L, H, W]``, upsampled in one call."""
    return PostProcess.from_mode(mode)(_numpy(raw), size)
