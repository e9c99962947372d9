"""COCO polygons and RLE -> masks, pixel for pixel as pycocotools.

Reference values: pycocotools 2.0.11 (numpy 2.4.6, Python 3.11; it installs and imports beside
torch 2.13.0), computed once in a throwaway venv with

    m = mask.decode(mask.merge(mask.frPyObjects(parts, 12, 16)))
    m.sum(), mask.encode(np.asfortranarray(m))["counts"],
    hashlib.sha256(np.packbits(m.astype(bool)).tobytes()).hexdigest()[:16]

(the compressed string is pycocotools' own encoding of its mask; the hash is of the row-major
bits). The rasteriser also matched pycocotools on 3,200 random polygons (1-3 parts, concave,
sub-pixel, repeated vertices, up to a pixel outside the image, images up to 640 px) and
500 random masks' compressed RLEs, mask for mask, when it was written.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from auditor.data.records import BadRecord
from auditor.data.segmentation import RLE, Polygons, parse_segmentation, polygon_mask, rle_from_string, rle_mask
from auditor.errors import AnnotationError

H, W = 12, 16

# name: (parts, pycocotools' area, its compressed RLE of the mask, sha256[:16] of np.packbits(mask))
PYCOCOTOOLS = {
    "concave": ([[1, 1, 14, 1, 14, 10, 8, 4, 1, 10]], 74, "=8400O1O1O1O1O1001O1O1O1O1f0", "208a761723c02425"),
    "border": ([[0, 0, 16, 0, 16, 5.5, 0, 12]], 141, "0g01D000O100O10000O100O10000O100", "e7ff47aa5d84ffe5"),
    "subpixel": ([[3.2, 4.1, 3.9, 4.3, 3.5, 4.8]], 1, "X11g4", "dda7d151c41c2fa1"),
    "parts": ([[0.5, 0.5, 4.5, 0.5, 4.5, 4.5, 0.5, 4.5], [10, 6, 15.5, 6, 12.7, 11.9]], 31,
              "=4800000Q2MRN2N2NO1N8", "89dacff632953b7d"),
    "outside": ([[-0.8, -0.6, 6.3, -0.2, 2.1, 7.7]], 26, "0393M1ON2N2Oi3", "718dee1edb44ec0c"),
    # -0.15 * 5 + 0.5 = -0.25: C's (int) cast truncates it to 0 (floor would give -1 and another mask)
    "negative": ([[3.7, -0.15, 3.7, 4.8, -0.15, 4.8]], 11, "41:1O1N2`4", "c584dae8aac51da7"),
}


def _from_string(counts: str, h: int = H, w: int = W) -> np.ndarray:
    return rle_mask(RLE(h, w, tuple(rle_from_string(counts))), (h, w))


@pytest.mark.parametrize("name", sorted(PYCOCOTOOLS))
def test_polygons_rasterise_to_pycocotools_pixels(name):
    parts, area, counts, digest = PYCOCOTOOLS[name]
    mask = polygon_mask(parts, (H, W))
    assert mask.shape == (H, W) and mask.dtype == bool
    assert int(mask.sum()) == area
    assert hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16] == digest
    assert np.array_equal(mask, _from_string(counts))


def test_concave_polygon_pixels():
    # pycocotools' mask of the arrowhead (1,1) (14,1) (14,10) (8,4) (1,10): the notch from below is empty,
    # the vertex rows 1 and 10 are in and out as its rounding says (not an exact point-in-polygon test)
    expected = np.zeros((H, W), dtype=bool)
    expected[1:9, 1:14] = True
    for row, (c0, c1) in {4: (7, 9), 5: (6, 10), 6: (5, 11), 7: (4, 12), 8: (3, 13)}.items():
        expected[row, c0:c1] = False
    assert np.array_equal(polygon_mask(PYCOCOTOOLS["concave"][0], (H, W)), expected)
    assert int(expected.sum()) == 74


def test_subpixel_polygon_is_the_pixel_whose_centre_it_holds():
    assert np.array_equal(np.argwhere(polygon_mask(PYCOCOTOOLS["subpixel"][0], (H, W))), [[4, 3]])


def test_uncompressed_rle_as_coco_crowds():
    # pycocotools: frPyObjects({"size": [4, 5], "counts": [2, 3, 1, 4, 6, 2, 2]}, 4, 5) -> counts b"23115NL",
    # decode -> the array below (column-major runs: 2 zeros, 3 ones, 1 zero, ...)
    expected = np.array([[0, 1, 1, 0, 1],
                         [0, 0, 1, 0, 1],
                         [1, 1, 0, 0, 0],
                         [1, 1, 0, 0, 0]], dtype=bool)
    seg = parse_segmentation({"size": [4, 5], "counts": [2, 3, 1, 4, 6, 2, 2]})
    assert seg == RLE(4, 5, (2, 3, 1, 4, 6, 2, 2))
    assert np.array_equal(rle_mask(seg, (4, 5)), expected)
    assert rle_from_string("23115NL") == [2, 3, 1, 4, 6, 2, 2]


def test_compressed_rle_with_long_and_negative_delta_counts():
    # pycocotools' encode of this 30 x 40 mask (area 693): counts over 31 take two characters, and from the
    # third count on each is stored as the difference to the count two before (negative ones too)
    expected = np.zeros((30, 40), dtype=bool)
    expected[3:27, 2:35] = True
    expected[10:20, 10:20] = False
    expected[0, 39] = True
    counts = "o1h0600000000000000_O40L040L040L040L040L040L040L040L040L040La00000000000000000000000000000e3YORM"
    seg = parse_segmentation({"size": [30, 40], "counts": counts})
    assert isinstance(seg, RLE) and sum(seg.counts) == 1200
    mask = rle_mask(seg, (30, 40))
    assert np.array_equal(mask, expected) and int(mask.sum()) == 693


def test_parsed_polygons_and_empty_segmentations():
    assert parse_segmentation([[0, 0, 4, 0, 4, 3], [1, 1, 2, 1, 2, 2]]) == \
        Polygons(((0.0, 0.0, 4.0, 0.0, 4.0, 3.0), (1.0, 1.0, 2.0, 1.0, 2.0, 2.0)))
    assert parse_segmentation(None) is None and parse_segmentation([]) is None  # detection-only files: the box


@pytest.mark.parametrize("raw, fragment", [
    ([[0, 0, 1, 1]], "polygon 1 [0, 0, 1, 1] must be a list [x1, y1, x2, y2, ...] of at least 3 points"),
    ([[0, 0, 1, 1, 2]], "polygon 1 [0, 0, 1, 1, 2] must be a list"),
    ([[0, 0, 1, 1, 2, 2], [0, 0, 1, "x", 2, 2]], "polygon 2 [0, 0, 1, \"x\", 2, 2] has a non-numeric value"),
    ([[0, 0, 1, 1, 2, float("nan")]], "has a NaN or infinite value"),
    ({"size": [2, 2], "counts": [1, 2]}, "add up to height x width = 4 (they add up to 3)"),
    ({"size": [2, 2], "counts": [5, -1]}, "must be >= 0"),
    ({"size": [2], "counts": [4]}, "RLE size [2] must be [height, width]"),
    ({"size": [2, 2], "counts": 4}, "RLE counts 4 must be a list of integers or a compressed string"),
    ({"size": [2, 2], "counts": "4~"}, "has the character '~'"),
    ({"size": [2, 2], "counts": "4`"}, "ends inside a number"),
    ({"size": [2, 2]}, "must be a list of polygons"),
    ("abc", "must be a list of polygons"),
])
def test_malformed_segmentations_are_refused(raw, fragment):
    with pytest.raises(BadRecord) as e:
        parse_segmentation(raw)
    assert fragment in str(e.value)


def test_segmentation_must_fit_the_image():
    with pytest.raises(AnnotationError, match=r"its RLE is 5x4 pixels \(width x height\), the image 4x5"):
        rle_mask(RLE(4, 5, (20,)), (5, 4))
    # a vertex up to a pixel outside is clipped as pycocotools does; further out is another image's coordinates
    assert polygon_mask([[-1, -1, 5, -1, 5, 4]], (4, 4)).any()
    with pytest.raises(AnnotationError, match=r"polygon 1 spans x 0\.\.9, y 0\.\.3: outside the image of 4x4"):
        polygon_mask([[0, 0, 9, 0, 9, 3]], (4, 4))
