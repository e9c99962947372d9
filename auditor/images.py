"""Image loading and model preprocessing.

Any PIL-readable file becomes an RGB ``uint8`` array ``[H, W, 3]`` in its *displayed*
orientation (EXIF rotation applied), so boxes and fixations refer to what a viewer sees.
Preprocessing is explicit (:class:`Preprocess`) and recorded in results: a plain resize
to the model's input size (no crop, so every map covers the whole image) and mean/std
normalisation.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Refuse images above this many pixels (PIL's own default is ~89 M, a warning only).
MAX_PIXELS = 178_956_970


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB ``uint8`` ``[H, W, 3]``, EXIF orientation applied.

    Handles RGB, RGBA / LA (composited on white), palette, CMYK, greyscale, 16-bit and
    float images (scaled by their own range), and animated files (first frame).

    Raises:
        ImageError: missing, empty, truncated, non-image or over-large file; the message
            names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"Image not found: {path}. Check the path (relative paths are resolved against the manifest's folder).")
    if path.stat().st_size == 0:
        raise ImageError(f"Image is an empty file (0 bytes): {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS below is the limit
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(
                        f"Image too large: {path} is {im.width}x{im.height} pixels "
                        f"(limit {MAX_PIXELS:,}); downscale it first."
                    )
                im.seek(0)
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # PIL refuses > 2 x its MAX_IMAGE_PIXELS before we see the size
        raise ImageError(f"Image too large: {path} has more than {MAX_PIXELS:,} pixels (a possible decompression "
                         "bomb); downscale it first.") from None
    except UnidentifiedImageError as e:
        raise ImageError(f"Not a readable image: {path} ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageError(f"Corrupt or truncated image: {path} ({e})") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("image has NaN or infinite pixel values")
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        if im.mode == "F" and 0.0 <= lo and hi <= 1.0:
            lo, hi = 0.0, 1.0
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        g = np.round(a * 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: resize to ``size`` then normalise.

    Attributes:
        size: ``(height, width)`` of the model input.
        mean, std: per-channel normalisation of ``[0, 1]`` RGB values.
        interpolation: resize filter (``"bilinear"`` or ``"bicubic"``), antialiased.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ImageError(f"Invalid input size {self.size}: give positive (height, width).")
        if any(s <= 0 for s in self.std):
            raise ImageError(f"Invalid std {self.std}: every value must be > 0.")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def __call__(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """``[H, W, 3]`` uint8 image(s) -> float32 tensor ``[B, 3, h, w]``."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        out = []
        for img in images:
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
            if tuple(t.shape[-2:]) != tuple(self.size):
                t = F.interpolate(t, size=self.size, mode=self.interpolation, align_corners=False, antialias=True)
                t = t.clamp_(0.0, 1.0)
            out.append(t)
        x = torch.cat(out)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std
