"""How an image becomes a model input (:class:`Preprocess`), and where that comes from.

Two ways to fit an image to the model's input size, both recorded in results
(``settings.preprocessing``), the ``--baseline`` / compare identity check and the resume
fingerprint:

* ``"squash"``: resize the whole image to the input size (aspect ratio not kept). Every map
  covers the whole image. Today's default for models that carry no data config: an
  antialiased float resize in torch (``resampler="torch"``).
* ``"crop"``: timm's and Hugging Face's evaluation transform -- resize so that the image covers
  ``scale_size`` (aspect kept; ``scale_size = floor(size / crop_pct)``), then take the centre
  ``size``. The model never sees the border: a map covers the crop only (:meth:`Preprocess.region`)
  and is "no evidence" outside it (:mod:`auditor.maps`).

A model's own settings are read from its data config when it has one, without importing its
library: timm's ``pretrained_cfg`` (``input_size``, ``crop_pct``, ``crop_mode``,
``interpolation``, ``mean``, ``std``: :func:`timm.data.resolve_data_config`'s defaults) or a Hugging
Face ``preprocessor_config.json`` (``do_resize``, ``size``, ``do_center_crop``, ``crop_size``,
``resample``, ``image_mean``, ``image_std``). These resize with PIL on the ``uint8`` image, as the
libraries do (``resampler="pil"``), so the tensor equals theirs (to 1e-5, tests/test_preprocess_reference.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ImageError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``--resize``: ``auto`` follows the model's data config (crop when it has one), else squash
RESIZE_MODES = ("auto", "squash", "crop")
#: timm's ``DEFAULT_CROP_PCT``: the crop when ``--resize crop`` is asked of a model without a config
DEFAULT_CROP_PCT = 0.875
PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
#: Hugging Face ``resample`` (PIL's integer codes) -> name
HF_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Preprocess:
    """Resize (squash, or resize + centre crop), scale to ``[0, 1]``, normalise.

    Attributes:
        size: ``(height, width)`` of the model input.
        mean, std: per-channel normalisation of ``[0, 1]`` RGB values.
        interpolation: resize filter; ``resampler="torch"`` offers ``bilinear`` / ``bicubic``
            (antialiased), ``"pil"`` also ``nearest``, ``lanczos``, ``box``, ``hamming``.
        resize: ``"squash"`` or ``"crop"`` (see the module docstring).
        resampler: ``"torch"`` (float resize, no rounding) or ``"pil"`` (``uint8`` resize, as
            timm's torchvision transforms and Hugging Face's PIL image processors).
        scale_size: crop only, ``(h, w)`` the image is resized to cover before the crop.
        crop_mode: crop only: ``"center"`` (aspect kept: the shorter side fits ``scale_size``) or
            ``"squash"`` (timm's: resize to ``scale_size`` exactly, then crop).
        crop_offset: crop only: how an odd margin splits -- ``"round"`` (torchvision's
            ``CenterCrop``, timm) or ``"floor"`` (Hugging Face).
        crop_pct: crop only, the configured share (timm's ``crop_pct``; ``scale_size`` was
            ``floor(size / crop_pct)``), recorded for the reader.
        source: where these settings came from (recorded; not compared).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    resize: str = "squash"
    resampler: str = "torch"
    scale_size: tuple[int, int] | None = None
    crop_mode: str = "center"
    crop_offset: str = "round"
    crop_pct: float | None = None
    source: str = "default"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ImageError(f"Invalid input size {self.size}: give positive (height, width).")
        if any(s <= 0 for s in self.std):
            raise ImageError(f"Invalid std {self.std}: every value must be > 0.")
        if self.resize not in ("squash", "crop") or self.resampler not in ("torch", "pil"):
            raise UsageError(f"resize={self.resize!r}, resampler={self.resampler!r}: use resize 'squash' or 'crop', "
                             "resampler 'torch' or 'pil'")
        allowed = ("bilinear", "bicubic") if self.resampler == "torch" else tuple(PIL_FILTERS)
        if self.interpolation not in allowed:
            raise UsageError(f"interpolation {self.interpolation!r} is not one of {', '.join(allowed)} "
                             f"(resampler {self.resampler})")
        if self.resize == "crop":
            if self.scale_size is None or any(s < c for s, c in zip(self.scale_size, self.size)):
                raise UsageError(f"a centre crop of {self.size} needs a resize at least that large, got scale_size "
                                 f"{self.scale_size} (crop_pct must be <= 1)")
            if self.crop_mode not in ("center", "squash") or self.crop_offset not in ("round", "floor"):
                raise UsageError(f"crop_mode {self.crop_mode!r} / crop_offset {self.crop_offset!r}: supported are "
                                 "crop_mode 'center' or 'squash' (timm's 'border' pads: not supported), offset "
                                 "'round' or 'floor'")

    def to_dict(self) -> dict[str, Any]:
        """What results record; the crop's fields only with ``resize="crop"``."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.resize != "crop":
            for k in ("scale_size", "crop_mode", "crop_offset", "crop_pct"):
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Preprocess":
        """Back from :meth:`to_dict` (results written before ``resize`` existed squashed, in torch)."""
        d = dict(d or {})
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                  if k in cls.__dataclass_fields__ and v is not None}
        return cls(**fields)

    # ------------------------------------------------------------------ geometry

    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` the image ``shape = (H, W)`` is resized to before the crop (squash: ``size``)."""
        if self.resize == "squash":
            return tuple(self.size)
        sh, sw = self.scale_size
        if self.crop_mode == "squash":
            return sh, sw
        h, w = int(shape[0]), int(shape[1])
        if sh == sw:  # torchvision Resize(int) / HF shortest_edge: short side = S, long = int(S * long / short)
            if h <= w:
                return sh, int(sh * w / h)
            return int(sw * h / w), sw
        ratio = min(h / sh, w / sw)  # timm ResizeKeepRatio for a non-square target
        return round(h / ratio), round(w / ratio)

    def crop_offsets(self, resized: tuple[int, int]) -> tuple[int, int]:
        """``(top, left)`` of the centre crop in the resized image."""
        split = (lambda m: int(round(m / 2.0))) if self.crop_offset == "round" else (lambda m: m // 2)
        return split(resized[0] - self.size[0]), split(resized[1] - self.size[1])

    def region(self, shape: tuple[int, int]) -> Box | None:
        """What the model sees of an image ``shape = (H, W)``: ``(x0, y0, x1, y1)`` as fractions of
        its width and height (None: the whole image, squash)."""
        if self.resize == "squash":
            return None
        rh, rw = self.resized_shape(shape)
        top, left = self.crop_offsets((rh, rw))
        return left / rw, top / rh, (left + self.size[1]) / rw, (top + self.size[0]) / rh

    def crop_box(self, shape: tuple[int, int]) -> Box | None:
        """:meth:`region` in the image's own pixels ``(x0, y0, x1, y1)`` (None: squash)."""
        r = self.region(shape)
        return None if r is None else (r[0] * shape[1], r[1] * shape[0], r[2] * shape[1], r[3] * shape[0])

    # ------------------------------------------------------------------ the transform

    def __call__(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """``[H, W, 3]`` uint8 image(s) -> float32 tensor ``[B, 3, h, w]``."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        x = torch.cat([self._resize(np.ascontiguousarray(img)) for img in images])
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resize(self, img: np.ndarray) -> torch.Tensor:
        """One image -> ``[1, 3, h, w]`` in ``[0, 1]``, resized (and cropped)."""
        rh, rw = self.resized_shape(img.shape[:2])
        if self.resampler == "pil":
            if (rh, rw) != img.shape[:2]:
                img = np.array(Image.fromarray(img).resize((rw, rh), PIL_FILTERS[self.interpolation]))
            t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
        else:
            t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
            if (rh, rw) != tuple(t.shape[-2:]):
                t = F.interpolate(t, size=(rh, rw), mode=self.interpolation, align_corners=False, antialias=True)
                t = t.clamp_(0.0, 1.0)
        if self.resize == "crop":
            top, left = self.crop_offsets((rh, rw))
            t = t[..., top:top + self.size[0], left:left + self.size[1]]
        return t


# ---------------------------------------------------------------------- from a model's data config

def from_timm_config(cfg: Mapping[str, Any], size: tuple[int, int] | None = None) -> Preprocess:
    """timm's evaluation transform from a ``pretrained_cfg`` (``resolve_data_config`` defaults:
    bicubic, ImageNet mean / std, ``crop_pct`` 0.875, ``crop_mode`` center); ``size`` overrides
    ``input_size``."""
    size = tuple(size or tuple(cfg.get("input_size", (3, 224, 224)))[-2:])
    crop_pct = float(cfg.get("crop_pct") or DEFAULT_CROP_PCT)
    mode = cfg.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise UsageError(f"the model's data config asks for crop_mode {mode!r} (timm's padding mode): not "
                         "supported; use --resize squash")
    return Preprocess(size=size, mean=tuple(cfg.get("mean") or IMAGENET_MEAN), std=tuple(cfg.get("std") or IMAGENET_STD),
                      interpolation=str(cfg.get("interpolation") or "bicubic"), resize="crop", resampler="pil",
                      scale_size=tuple(math.floor(s / crop_pct) for s in size), crop_mode=mode, crop_offset="round",
                      crop_pct=crop_pct, source="timm pretrained_cfg")


def from_hf_processor(p: Mapping[str, Any], size: tuple[int, int] | None = None) -> Preprocess:
    """A Hugging Face image processor's transform (``preprocessor_config.json``): resize to
    ``size`` ``{height, width}`` (squash) or its ``shortest_edge`` then ``crop_size`` centre crop
    (crop, margins split by floor). ``size`` (``--image-size``) overrides the crop / resize size,
    keeping the processor's ``crop_pct``."""
    scale = p.get("rescale_factor", 1 / 255)
    if p.get("do_rescale", True) is False or not math.isclose(float(scale), 1 / 255, rel_tol=1e-6):
        raise UsageError(f"preprocessor_config.json rescales by {scale if p.get('do_rescale', True) else 'nothing'}; "
                         "only 1/255 is supported: use --resize squash with --mean / --std")
    mean, std = (tuple(p.get("image_mean") or IMAGENET_MEAN), tuple(p.get("image_std") or IMAGENET_STD)) \
        if p.get("do_normalize", True) else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    common = dict(mean=mean, std=std, interpolation=HF_RESAMPLE.get(int(p.get("resample", 2)), "bilinear"),
                  resampler="pil", source="preprocessor_config.json")
    rs = p.get("size") or {}
    if isinstance(rs, int):
        rs = {"shortest_edge": rs}
    crop = p.get("crop_size") or {}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if p.get("do_center_crop") and "shortest_edge" in rs and {"height", "width"} <= set(crop):
        out = (int(crop["height"]), int(crop["width"]))
        short = int(rs["shortest_edge"])
        if size is not None:
            short = math.floor(size[0] * short / out[0])
            out = tuple(size)
        return Preprocess(size=out, resize="crop", scale_size=(short, short), crop_offset="floor",
                          crop_pct=round(out[0] / short, 6), **common)
    if {"height", "width"} <= set(rs):
        return Preprocess(size=tuple(size or (int(rs["height"]), int(rs["width"]))), **common)
    raise UsageError(f"preprocessor_config.json: size {rs} with do_center_crop={p.get('do_center_crop')} is not a "
                     "resize this tool reproduces (height/width, or shortest_edge with a crop_size); use --resize squash")


def model_preprocess(model: Any, image_size: int | tuple[int, int] | None = None, *, resize: str = "auto",
                     mean: Any = None, std: Any = None) -> Preprocess:
    """The preprocessing of ``model`` for ``--resize`` (``auto`` / ``squash`` / ``crop``).

    ``auto``: the model's own data config when it has one (a Hugging Face processor config
    under ``default_cfg["image_processor"]``, or a timm ``pretrained_cfg`` -- it has ``crop_pct``),
    else today's squash in torch at ``default_cfg["input_size"]`` (else 224). ``squash``: the whole
    image resized, with the config's interpolation / mean / std when there is one. ``crop``: the
    config's crop, or timm's default (``crop_pct`` 0.875, bicubic) for a model without one.
    ``image_size``, ``mean``, ``std``: explicit options, they win over the config.
    """
    if resize not in RESIZE_MODES:
        raise UsageError(f"--resize {resize!r}: choose one of {', '.join(RESIZE_MODES)}")
    cfg = getattr(model, "default_cfg", None) or getattr(model, "pretrained_cfg", None) or {}
    size = None if image_size is None else (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if isinstance(cfg.get("image_processor"), Mapping):
        try:
            own = from_hf_processor(cfg["image_processor"], size)
        except UsageError:
            if resize != "squash":
                raise
            own = None  # a resize we do not reproduce: --resize squash still takes its mean / std
    elif "crop_pct" in cfg:
        own = from_timm_config(cfg, size)
    else:
        own = None
    base = size or (tuple(cfg["input_size"][-2:]) if "input_size" in cfg else (224, 224))
    if own is None:
        own = Preprocess(size=base, mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)))
    if resize == "crop" and own.resize == "squash":
        own = replace(own, resize="crop", resampler="pil", crop_offset="round", crop_pct=DEFAULT_CROP_PCT,
                      scale_size=tuple(math.floor(s / DEFAULT_CROP_PCT) for s in own.size),
                      source=f"{own.source} + --resize crop (timm's default crop_pct {DEFAULT_CROP_PCT})")
    elif resize == "squash" and own.resize == "crop":
        own = replace(own, resize="squash", scale_size=None, crop_mode="center", crop_offset="round", crop_pct=None,
                      source=f"{own.source} + --resize squash")
    return replace(own, mean=tuple(mean) if mean else own.mean, std=tuple(std) if std else own.std)
