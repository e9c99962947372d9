"""Per-image annotations as arrays at the image's resolution, checked against its size.

Coordinates are original pixels of the displayed (EXIF-rotated) image, ``x`` = column,
``y`` = row; ``shape`` is the decoded image's ``(H, W)``. Pixel ``(r, c)`` covers
``[c, c + 1) x [r, r + 1)``; its centre is ``(c + 0.5, r + 0.5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage.transform import resize

from ..metrics.gaze import fixations_to_map
from ..errors import AnnotationError
from .records import Box, Record

_NUMERIC_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F", "L")
_HINT = "coordinates must be original pixels of the displayed (EXIF-rotated) image"


def _size(shape: Sequence[int]) -> tuple[int, int]:
    h, w = (int(s) for s in tuple(shape)[:2])
    if h < 1 or w < 1:
        raise AnnotationError(f"image shape {tuple(shape)} is empty")
    return h, w


def _corners(box: Box | Sequence[float]) -> tuple[float, float, float, float]:
    if isinstance(box, Box):
        return box.x0, box.y0, box.x1, box.y1
    values = tuple(float(v) for v in box)
    if len(values) != 4:
        raise AnnotationError(f"box {list(values)} must have 4 values [x0, y0, x1, y1]")
    return values  # type: ignore[return-value]


def box_mask(boxes: Sequence[Box | Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """Union of boxes as a boolean mask ``[H, W]`` (all False for no boxes).

    Convention (pixel centres): pixel ``(r, c)`` is inside box ``[x0, y0, x1, y1]`` when
    ``x0 <= c + 0.5 <= x1`` and ``y0 <= r + 0.5 <= y1``. So ``[0, 0, W, H]`` covers the whole
    image, ``[0, 0, 2, 1]`` covers pixels ``(0, 0)`` and ``(0, 1)``, and a box that covers
    part of a pixel but not its centre does not include it.

    Args:
        boxes: :class:`Box` objects or ``[x0, y0, x1, y1]`` sequences, in original pixels.
        shape: ``(H, W)`` of the decoded image.

    Raises:
        AnnotationError: a box outside the image (``x0 < 0``, ``y0 < 0``, ``x1 > W`` or
            ``y1 > H``), a box with ``x1 <= x0`` / ``y1 <= y0`` or NaN, or one that covers
            no pixel centre. Boxes are numbered from 1 in messages.
    """
    h, w = _size(shape)
    mask = np.zeros((h, w), dtype=bool)
    for i, box in enumerate(boxes, 1):
        x0, y0, x1, y1 = _corners(box)
        text = f"box {i} [{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            raise AnnotationError(f"{text} is invalid: it needs finite x0 < x1 and y0 < y1")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise AnnotationError(f"{text} lies outside the image of {w}x{h} pixels (width x height); {_HINT}")
        c0, c1 = math.ceil(x0 - 0.5), math.floor(x1 - 0.5)  # inclusive column range of covered centres
        r0, r1 = math.ceil(y0 - 0.5), math.floor(y1 - 0.5)
        if c1 < c0 or r1 < r0:
            raise AnnotationError(f"{text} covers no pixel centre of the {w}x{h} image (too thin); widen it")
        mask[r0:r1 + 1, c0:c1 + 1] = True
    return mask


def fixation_map(points: Sequence[Sequence[float]] | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Fixation points ``(x, y)`` as a boolean map ``[H, W]``: point -> pixel ``(floor(y), floor(x))``.

    Raises:
        AnnotationError: a point outside ``[0, W) x [0, H)`` (or NaN), naming the point and the image size.
    """
    h, w = _size(shape)
    pts = np.asarray([[float(v) for v in p] for p in points], dtype=np.float64).reshape(-1, 2)
    for i, (x, y) in enumerate(pts, 1):
        if not (0 <= x < w and 0 <= y < h):
            raise AnnotationError(f"fixation {i} ({x:g}, {y:g}) lies outside the image of {w}x{h} pixels "
                                  f"(x in [0, {w}), y in [0, {h})); {_HINT}")
    return fixations_to_map(pts, (h, w))


def _read_gaze(path: Path) -> np.ndarray:
    if not path.is_file():
        raise AnnotationError(f"Gaze map not found: {path}. Check the path (relative to the manifest's folder).")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)  # the same orientation as load_image
            if im.mode not in _NUMERIC_MODES:
                im = im.convert("RGB").convert("F")  # luminance; alpha is ignored
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise AnnotationError(f"Cannot read gaze map {path} ({e}); give a 2-D .npy array or a greyscale image") from None


def load_gaze_map(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    """A gaze density map, float64 ``[H, W]``, at the image's resolution.

    Reads a 2-D ``.npy`` array, or any PIL-readable image as greyscale (16-bit / float
    values kept, colour -> luminance, EXIF orientation applied). A map of another size is
    resized to ``shape`` with bilinear interpolation (``skimage.transform.resize``,
    ``order=1``, ``mode="edge"``, pixel centres aligned, values not rescaled) and Gaussian
    anti-aliasing when it shrinks along either axis. The map is not normalised.

    Raises:
        AnnotationError: a missing or unreadable file, a map that is not 2-D / numeric, has
            NaN or infinite values, negative values, or is all zero.
    """
    path = Path(path)
    h, w = _size(shape)
    raw = _read_gaze(path)
    if raw.ndim != 2 or raw.size == 0:
        raise AnnotationError(f"Gaze map {path} must be a 2-D array, got shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating) or raw.dtype == bool):
        raise AnnotationError(f"Gaze map {path} must hold real numbers, got dtype {raw.dtype}")
    a = raw.astype(np.float64)
    if not np.isfinite(a).all():
        raise AnnotationError(f"Gaze map {path} has NaN or infinite values")
    if (a < 0).any():
        raise AnnotationError(f"Gaze map {path} has negative values (min {a.min():g}); a density must be >= 0")
    if not a.any():
        raise AnnotationError(f"Gaze map {path} is all zero: it holds no gaze")
    if a.shape != (h, w):
        shrinking = a.shape[0] > h or a.shape[1] > w
        a = resize(a, (h, w), order=1, mode="edge", anti_aliasing=shrinking, preserve_range=True)
    return a


@dataclass
class Annotations:
    """Reference arrays of one image, each ``[H, W]`` or ``None`` when the record has none.

    Attributes:
        mask: bool, union of the boxes (:func:`box_mask`).
        fixations: bool, fixated pixels (:func:`fixation_map`).
        gaze: float64 >= 0, gaze density (:func:`load_gaze_map`).
    """

    mask: np.ndarray | None = None
    fixations: np.ndarray | None = None
    gaze: np.ndarray | None = None


def load_annotations(record: Record, shape: Sequence[int]) -> Annotations:
    """Build whichever of mask / fixations / gaze ``record`` has, at the image's ``(H, W)``.

    Raises:
        AnnotationError: as the builders, the message prefixed with the record's id and source.
    """
    try:
        return Annotations(
            mask=box_mask(record.boxes, shape) if record.boxes else None,
            fixations=fixation_map(record.fixations, shape) if record.fixations else None,
            gaze=load_gaze_map(record.gaze, shape) if record.gaze is not None else None,
        )
    except AnnotationError as e:
        raise AnnotationError(f"{record.id} ({record.source}): {e}") from None
