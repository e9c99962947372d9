"""Image loading and model preprocessing.

Any PIL-readable file becomes an RGB ``uint8`` array ``[H, W, 3]`` in its *displayed*
orientation (EXIF rotation applied), so boxes and fixations refer to what a viewer sees.
Preprocessing (resize or resize + centre crop, mean / std) is :class:`auditor.preprocess.Preprocess`,
re-exported here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess  # noqa: F401  (re-exported)
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
