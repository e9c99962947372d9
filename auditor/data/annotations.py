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
from ..errors import AnnotationError, UsageError
from .records import Box, Record
from .segmentation import segmentation_mask

#: Which objects form an image's mask: the target class's own (default), or every object.
MASK_CLASSES = ("target", "any")

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
        mask[_box_cells(box, i, h, w)] = True
    return mask


def _box_cells(box: Box | Sequence[float], i: int, h: int, w: int) -> tuple[slice, slice]:
    """The rows and columns whose pixel centres box number ``i`` covers (see :func:`box_mask`)."""
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
    return slice(r0, r1 + 1), slice(c0, c1 + 1)


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


def _read_array(path: Path, what: str) -> np.ndarray:
    """A 2-D-or-not array from a ``.npy`` file or an image (greyscale; colour -> luminance)."""
    if not path.is_file():
        raise AnnotationError(f"{what} not found: {path}. Check the path (relative to the manifest's folder).")
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
        raise AnnotationError(f"Cannot read {what.lower()} {path} ({e}); "
                              "give a 2-D .npy array or a greyscale image") from None


def _check_2d(raw: np.ndarray, path: Path, what: str) -> None:
    if raw.ndim != 2 or raw.size == 0:
        raise AnnotationError(f"{what} {path} must be a 2-D array, got shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating) or raw.dtype == bool):
        raise AnnotationError(f"{what} {path} must hold real numbers, got dtype {raw.dtype}")


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
    raw = _read_array(path, "Gaze map")
    _check_2d(raw, path, "Gaze map")
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


def load_mask(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    """An object mask file as a boolean ``[H, W]`` at the image's resolution.

    A ``.npy`` array must be ``bool`` or hold only 0 and 1; an image (PNG, ...) is read as
    greyscale (colour -> luminance, EXIF orientation applied) and every non-zero pixel is
    object. A mask of another size is resized nearest-neighbour (pixel centres: image row
    ``r`` reads mask row ``floor((r + 0.5) * h / H)``) when it has the image's aspect ratio,
    i.e. it is the image scaled by one factor with each side rounded (within 1 pixel);
    another aspect ratio is refused (a mask of another image, or of the image before its
    EXIF rotation).

    Raises:
        AnnotationError: a missing or unreadable file, not 2-D / numeric, NaN values, a
            ``.npy`` with values other than 0 / 1, another aspect ratio, or no object pixel
            (before or after resizing).
    """
    path = Path(path)
    h, w = _size(shape)
    raw = _read_array(path, "Mask")
    _check_2d(raw, path, "Mask")
    if np.issubdtype(raw.dtype, np.floating) and np.isnan(raw).any():
        raise AnnotationError(f"Mask {path} has NaN values")
    if path.suffix.lower() == ".npy" and raw.dtype != bool and not np.isin(raw, (0, 1)).all():
        raise AnnotationError(f"Mask {path} must be bool or hold only 0 and 1, got values in "
                              f"[{raw.min():g}, {raw.max():g}]; threshold it (mask > t) and save it again")
    mask = raw != 0
    if not mask.any():
        raise AnnotationError(f"Mask {path} is empty: no pixel is object (non-zero)")
    mh, mw = mask.shape
    if (mh, mw) == (h, w):
        return mask
    if max((mh - 1) / h, (mw - 1) / w) > min((mh + 1) / h, (mw + 1) / w):  # no one scale fits both sides
        raise AnnotationError(f"Mask {path} is {mw}x{mh} pixels (width x height), the image {w}x{h}: another "
                              "aspect ratio; give a mask of the image as displayed (EXIF rotation applied)")
    rows = ((np.arange(h) + 0.5) * mh / h).astype(np.int64)
    cols = ((np.arange(w) + 0.5) * mw / w).astype(np.int64)
    mask = mask[np.ix_(rows, cols)]
    if not mask.any():
        raise AnnotationError(f"Mask {path} ({mw}x{mh}) is empty once resized to the image's {w}x{h} pixels")
    return mask


def mask_boxes(record: Record, mask_classes: str = "target") -> list[tuple[int, Box]]:
    """The boxes (numbered from 1 in the record) whose union is the image's object mask.

    ``mask_classes="target"``: the boxes of the record's own class -- labelled with its class
    name (``Record.label_name``, compared exactly) or unlabelled (an unlabelled box belongs to
    the record's label); boxes of other classes are left out. ``"any"``: every box.

    Raises:
        AnnotationError (``"target"`` only): the record has labelled boxes but no class name
            to match them with, or boxes of which none (and no mask file) is its class's.
    """
    numbered = list(enumerate(record.boxes, 1))
    if check_mask_classes(mask_classes) == "any":
        return numbered
    labels = sorted({b.label for b in record.boxes if b.label is not None})
    if record.label_name is None:
        if labels:
            raise AnnotationError(f"its boxes are labelled ({', '.join(labels)}) but the record has no class name to "
                                  "match them with: give it a label (a class name, or an index with a class list), "
                                  "or pass --mask-classes any to score every box")
        return numbered
    own = [(i, b) for i, b in numbered if b.label is None or b.label == record.label_name]
    if numbered and not own and record.mask is None:
        raise AnnotationError(f"none of its {len(numbered)} box(es) is a {record.label_name!r} (their labels: "
                              f"{', '.join(labels)}): label the target's boxes with its class name, or pass "
                              "--mask-classes any to score against every object")
    return own


def object_mask(record: Record, shape: Sequence[int], mask_classes: str = "target") -> np.ndarray | None:
    """The image's object mask, bool ``[H, W]``: the union of the :func:`mask_boxes` (each its
    segmentation when it has one, else its box) and the record's mask file (it belongs to the
    record's class, so it is part of the mask in both modes). ``None`` when there is neither.
    Every box without a segmentation is checked against the image (:func:`box_mask`), also
    one of another class that is not in the mask."""
    h, w = _size(shape)
    for i, box in enumerate(record.boxes, 1):  # every plain box is checked, in the mask or not
        if box.segmentation is None:
            _box_cells(box, i, h, w)
    mask = load_mask(record.mask, shape) if record.mask is not None else None
    for i, box in mask_boxes(record, mask_classes):
        mask = np.zeros((h, w), dtype=bool) if mask is None else mask
        if box.segmentation is None:
            mask[_box_cells(box, i, h, w)] = True
            continue
        try:
            mask |= segmentation_mask(box.segmentation, shape)
        except AnnotationError as e:
            raise AnnotationError(f"box {i}: {e}") from None
    if mask is not None and not mask.any():
        raise AnnotationError(f"its objects' segmentations cover no pixel centre of the {w}x{h} image")
    return mask


def check_mask_classes(mask_classes: str) -> str:
    """``mask_classes`` if it is ``"target"`` or ``"any"``; :class:`UsageError` otherwise."""
    if mask_classes not in MASK_CLASSES:
        raise UsageError(f"--mask-classes must be one of {', '.join(MASK_CLASSES)}, got {mask_classes!r}")
    return mask_classes


@dataclass
class Annotations:
    """Reference arrays of one image, each ``[H, W]`` or ``None`` when the record has none.

    Attributes:
        mask: bool, the object mask (:func:`object_mask`: the target's boxes, segmentations
            and mask file).
        fixations: bool, fixated pixels (:func:`fixation_map`).
        gaze: float64 >= 0, gaze density (:func:`load_gaze_map`).
    """

    mask: np.ndarray | None = None
    fixations: np.ndarray | None = None
    gaze: np.ndarray | None = None


def load_annotations(record: Record, shape: Sequence[int], *, mask_classes: str = "target") -> Annotations:
    """Build whichever of mask / fixations / gaze ``record`` has, at the image's ``(H, W)``.

    ``mask_classes``: which objects form the mask, ``"target"`` (the record's class) or
    ``"any"`` (:func:`mask_boxes`).

    Raises:
        AnnotationError: as the builders, the message prefixed with the record's id and source.
    """
    try:
        return Annotations(
            mask=object_mask(record, shape, mask_classes),
            fixations=fixation_map(record.fixations, shape) if record.fixations else None,
            gaze=load_gaze_map(record.gaze, shape) if record.gaze is not None else None,
        )
    except AnnotationError as e:
        raise AnnotationError(f"{record.id} ({record.source}): {e}") from None
