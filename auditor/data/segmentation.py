"""COCO segmentations -> boolean masks, in numpy, with pycocotools' exact conventions.

A COCO instance's ``segmentation`` is one of

- polygons: ``[[x1, y1, x2, y2, ...], ...]``, one list per part (at least 3 points each), in
  original pixels; the mask is the union of the parts (:func:`polygon_mask`);
- an uncompressed RLE (crowd instances): ``{"size": [h, w], "counts": [n0, n1, ...]}``;
- a compressed RLE: ``{"size": [h, w], "counts": "<LEB128-like string>"}``.

RLE counts alternate runs of 0 and 1, starting with 0, over the pixels in column-major
(Fortran) order; they must add up to ``h * w``. The rasteriser and the decoders follow
``common/maskApi.c`` of cocodataset/cocoapi (commit 8c9bcc3: ``rleFrPoly``, ``rleFrString``,
``rleDecode``) operation by operation, so the pixels equal ``pycocotools.mask.decode`` of
``frPyObjects`` / ``merge`` (checked against pycocotools 2.0.11 in
``tests/test_segmentation.py``). No pycocotools is needed at run time.

Parsing (:func:`parse_segmentation`) checks the structure and raises
:class:`~auditor.data.records.BadRecord`; rasterising checks the image size and raises
:class:`~auditor.errors.AnnotationError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from ..errors import AnnotationError
from .records import BadRecord, number, show_value

_SCALE = 5.0  # rleFrPoly's upsampling factor
_EDGE_SLACK = 1.0  # polygon vertices may lie up to one pixel outside the image (pycocotools clips them)


@dataclass(frozen=True)
class Polygons:
    """Polygon parts, each ``(x1, y1, x2, y2, ...)`` in original pixels (``x`` = column)."""

    parts: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class RLE:
    """A run-length encoded ``height x width`` mask; ``counts`` decoded to integers, summing to ``h * w``."""

    height: int
    width: int
    counts: tuple[int, ...]


Segmentation = Union[Polygons, RLE]


def parse_segmentation(raw: Any) -> Segmentation | None:
    """A COCO ``segmentation`` value -> :class:`Polygons` / :class:`RLE`; ``None`` or ``[]`` -> ``None``.

    Raises:
        BadRecord: not a list of polygons or an RLE dict; a part with an odd number of values,
            fewer than 3 points or a non-finite value; an RLE whose size is not two positive
            integers, whose counts are negative, not integers, or do not add up to ``h * w``,
            or whose string holds a character outside ``'0'..'o'`` or ends inside a number.
    """
    if raw is None or raw == []:
        return None
    if isinstance(raw, list):
        return Polygons(tuple(_part(p, i) for i, p in enumerate(raw, 1)))
    if isinstance(raw, dict) and set(raw) == {"size", "counts"}:
        size = raw["size"]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise BadRecord(f"RLE size {show_value(size)} must be [height, width], two positive integers")
        h, w = size
        counts = raw["counts"]
        if isinstance(counts, str):
            values = rle_from_string(counts)
        elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            values = list(counts)
        else:
            raise BadRecord(f"RLE counts {show_value(counts)} must be a list of integers or a compressed string")
        if any(v < 0 for v in values) or sum(values) != h * w:
            raise BadRecord(f"RLE counts must be >= 0 and add up to height x width = {h * w} "
                            f"(they add up to {sum(values)})")
        return RLE(h, w, tuple(values))
    raise BadRecord(f"segmentation {show_value(raw)} must be a list of polygons [[x1, y1, x2, y2, ...], ...] "
                    "or an RLE {\"size\": [h, w], \"counts\": ...}")


def _part(raw: Any, i: int) -> tuple[float, ...]:
    if not isinstance(raw, list) or len(raw) < 6 or len(raw) % 2:
        raise BadRecord(f"polygon {i} {show_value(raw)} must be a list [x1, y1, x2, y2, ...] of at least 3 points")
    if all(type(v) is float or type(v) is int for v in raw):  # the usual case, fast: COCO has millions of values
        try:
            values = tuple(map(float, raw))
            if all(map(math.isfinite, values)):
                return values
        except OverflowError:  # an int too large for a float: number() says so below
            pass
    try:
        return tuple(number(v) for v in raw)
    except ValueError as e:
        raise BadRecord(f"polygon {i} {show_value(raw)} has a {e} value") from None


def rle_from_string(counts: str) -> list[int]:
    """Decode a compressed RLE string (pycocotools' ``rleFrString``): 5 bits per character
    (``chr(48 + bits)``, bit ``0x20`` = more characters follow, bit ``0x10`` of the last = negative),
    each count after the second stored as the difference to the count two before it."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p == len(counts):
                raise BadRecord(f"RLE counts string {show_value(counts)} ends inside a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise BadRecord(f"RLE counts string {show_value(counts)} has the character {counts[p]!r} "
                                "(allowed: '0' to 'o')")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _check_size(shape: Sequence[int]) -> tuple[int, int]:
    h, w = (int(s) for s in tuple(shape)[:2])
    if h < 1 or w < 1:
        raise AnnotationError(f"image shape {tuple(shape)} is empty")
    return h, w


def rle_mask(rle: RLE, shape: Sequence[int]) -> np.ndarray:
    """Decode ``rle`` to a boolean mask ``[H, W]`` (pycocotools' ``rleDecode``).

    Raises:
        AnnotationError: the RLE's size differs from the image's ``(H, W)``.
    """
    h, w = _check_size(shape)
    if (rle.height, rle.width) != (h, w):
        raise AnnotationError(f"its RLE is {rle.width}x{rle.height} pixels (width x height), the image {w}x{h}; "
                              "an RLE must have its image's size (as displayed, EXIF rotation applied)")
    values = np.arange(len(rle.counts)) % 2 == 1
    return np.repeat(values, rle.counts).reshape(w, h).T


def _boundary(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every point of the closed polygon ``(x, y)`` (integers, upsampled) along its edges:
    ``rleFrPoly``'s first loop, one edge at a time, in the same floating-point operations."""
    us, vs = [], []
    for j in range(len(x) - 1):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        n = max(dx, dy)
        t = np.arange(n + 1)
        if flip:
            t = n - t
        s = 0.0 if n == 0 else ((ye - ys) / dx if dx >= dy else (xe - xs) / dy)  # n == 0: C's 0/0 is never used
        minor = np.trunc(float(ys if dx >= dy else xs) + s * t + 0.5).astype(np.int64)
        major = t + (xs if dx >= dy else ys)
        us.append(major if dx >= dy else minor)
        vs.append(minor if dx >= dy else major)
    return np.concatenate(us), np.concatenate(vs)


def _part_toggles(xy: Sequence[float], h: int, w: int) -> np.ndarray:
    """Column-major pixel indices where one polygon part's mask switches (``rleFrPoly``)."""
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x = np.trunc(_SCALE * pts[:, 0] + 0.5).astype(np.int64)  # C's (int) cast truncates towards zero
    y = np.trunc(_SCALE * pts[:, 1] + 0.5).astype(np.int64)
    u, v = _boundary(np.append(x, x[0]), np.append(y, y[0]))
    step = u[1:] != u[:-1]  # points where the boundary crosses to another (upsampled) column
    u1, u0, v1, v0 = u[1:][step], u[:-1][step], v[1:][step], v[:-1][step]
    xd = (np.where(u1 < u0, u1, u1 - 1).astype(np.float64) + 0.5) / _SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)  # only columns that fall on a pixel centre
    yd = (np.minimum(v1, v0).astype(np.float64) + 0.5) / _SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    return (xd[keep] * h + yd[keep]).astype(np.int64)


def polygon_mask(parts: Sequence[Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """Rasterise polygon parts (union) to a boolean mask ``[H, W]`` as pycocotools does.

    pycocotools' ``rleFrPoly``: vertices are scaled by 5 and rounded, the boundary is walked
    densely, and each crossing of a column of pixel centres starts or ends a run in that
    column at the first pixel centre below the boundary. So a pixel is inside when its centre
    is (edges included roughly half the time: equal to pycocotools, not to an exact
    point-in-polygon test). Vertices outside the image are clipped.

    Args:
        parts: each ``[x1, y1, x2, y2, ...]`` (at least 3 points), original pixels.
        shape: ``(H, W)`` of the decoded image.

    Raises:
        AnnotationError: a vertex more than one pixel outside the image (coordinates of
            another image size), naming the polygon and the image size.
    """
    h, w = _check_size(shape)
    mask = np.zeros(h * w, dtype=bool)
    for i, xy in enumerate(parts, 1):
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if not (np.isfinite(pts).all() and pts[:, 0].min() >= -_EDGE_SLACK and pts[:, 1].min() >= -_EDGE_SLACK
                and pts[:, 0].max() <= w + _EDGE_SLACK and pts[:, 1].max() <= h + _EDGE_SLACK):
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            raise AnnotationError(f"its polygon {i} spans x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}: outside the "
                                  f"image of {w}x{h} pixels (width x height); coordinates must be original pixels "
                                  "of the displayed (EXIF-rotated) image")
        toggles = _part_toggles(xy, h, w)
        if not toggles.size:
            continue
        # a closed boundary crosses each column an even number of times: 0 before the first and after the last toggle
        lo, hi = int(toggles.min()), min(int(toggles.max()), h * w)
        mask[lo:hi] |= np.cumsum(np.bincount(toggles - lo, minlength=hi - lo)[:hi - lo]) % 2 == 1
    return mask.reshape(w, h).T


def segmentation_mask(seg: Segmentation, shape: Sequence[int]) -> np.ndarray:
    """:func:`polygon_mask` or :func:`rle_mask` of ``seg``, a boolean ``[H, W]``."""
    if isinstance(seg, RLE):
        return rle_mask(seg, shape)
    return polygon_mask(seg.parts, shape)

