"""Annotations -> arrays: box masks (pixel centres), fixation maps, gaze maps, per-record loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.data import Annotations, Box, Record, box_mask, fixation_map, load_annotations, load_gaze_map
from auditor.errors import AnnotationError


def test_box_mask_uses_pixel_centres():
    # [0.5, 0.5, 2.5, 1.5] holds the centres 0.5, 1.5, 2.5 (columns 0-2) and 0.5, 1.5 (rows 0-1), ends included;
    # [3.4, 3.4, 3.6, 3.6] holds only the centre (3.5, 3.5).
    mask = box_mask([Box(0.5, 0.5, 2.5, 1.5), [3.4, 3.4, 3.6, 3.6]], (4, 4))
    expected = np.array([[1, 1, 1, 0],
                         [1, 1, 1, 0],
                         [0, 0, 0, 0],
                         [0, 0, 0, 1]], dtype=bool)
    assert mask.dtype == bool and np.array_equal(mask, expected)
    assert box_mask([[0, 0, 4, 4]], (4, 4)).all()
    # [0.6, 0, 2, 1]: the centre 0.5 is left of x0, 1.5 is inside -> only column 1 of row 0
    assert np.array_equal(np.argwhere(box_mask([[0.6, 0, 2, 1]], (4, 4))), [[0, 1]])
    assert not box_mask([], (4, 4)).any()


def test_box_mask_non_square_and_errors():
    assert box_mask([[0, 0, 5, 3]], (3, 5)).all()  # shape is (H, W): x spans the 5 columns
    with pytest.raises(AnnotationError, match=r"box 1 \[0, 0, 3, 5\] lies outside the image of 5x3 pixels"):
        box_mask([[0, 0, 3, 5]], (3, 5))
    with pytest.raises(AnnotationError, match=r"box 2 \[-1, 0, 1, 1\] lies outside the image of 4x4"):
        box_mask([[0, 0, 1, 1], [-1, 0, 1, 1]], (4, 4))
    with pytest.raises(AnnotationError, match="covers no pixel centre"):
        box_mask([[0.6, 0, 1.4, 4]], (4, 4))


def test_fixation_map():
    fmap = fixation_map([(0, 0), (3.99, 1.2), (2.5, 3)], (4, 5))  # H=4, W=5; (x, y) -> (floor y, floor x)
    assert fmap.shape == (4, 5) and fmap.dtype == bool
    assert sorted(map(tuple, np.argwhere(fmap).tolist())) == [(0, 0), (1, 3), (3, 2)]
    with pytest.raises(AnnotationError, match=r"fixation 2 \(5, 0\) lies outside the image of 5x4 pixels"):
        fixation_map([(0, 0), (5, 0)], (4, 5))
    with pytest.raises(AnnotationError, match=r"fixation 1 \(-0.1, 0\)"):
        fixation_map([(-0.1, 0)], (4, 5))


def test_gaze_npy_resized_bilinear(tmp_path):
    np.save(tmp_path / "g.npy", np.array([[0.0, 1.0], [2.0, 3.0]]))
    # output centres map to input coordinates -0.25, 0.25, 0.75, 1.25 (edges clamped): weights t = 0, .25, .75, 1,
    # value = 2 * t[row] + t[col]
    expected = np.array([[0.0, 0.25, 0.75, 1.0],
                         [0.5, 0.75, 1.25, 1.5],
                         [1.5, 1.75, 2.25, 2.5],
                         [2.0, 2.25, 2.75, 3.0]])
    g = load_gaze_map(tmp_path / "g.npy", (4, 4))
    assert g.dtype == np.float64 and np.allclose(g, expected)
    same = load_gaze_map(tmp_path / "g.npy", (2, 2))
    assert np.array_equal(same, [[0, 1], [2, 3]])
    np.save(tmp_path / "flat.npy", np.full((4, 6), 2.0))
    assert np.allclose(load_gaze_map(tmp_path / "flat.npy", (2, 3)), 2.0)  # shrinking keeps a constant map


def test_gaze_image_is_read_as_greyscale(tmp_path):
    Image.fromarray(np.array([[0, 10], [20, 30]], dtype=np.uint8)).save(tmp_path / "g.png")
    assert np.array_equal(load_gaze_map(tmp_path / "g.png", (2, 2)), [[0, 10], [20, 30]])
    Image.fromarray(np.full((2, 2, 3), 100, dtype=np.uint8)).save(tmp_path / "rgb.png")
    assert np.allclose(load_gaze_map(tmp_path / "rgb.png", (2, 2)), 100.0, atol=1e-3)


@pytest.mark.parametrize("array, fragment", [
    (np.array([[1.0, np.nan]]), "NaN or infinite"),
    (np.array([[1.0, -0.5]]), "negative values (min -0.5)"),
    (np.zeros((2, 2)), "all zero"),
    (np.ones((2, 2, 1)), "must be a 2-D array, got shape (2, 2, 1)"),
])
def test_bad_gaze_maps(tmp_path, array, fragment):
    np.save(tmp_path / "g.npy", array)
    with pytest.raises(AnnotationError) as info:
        load_gaze_map(tmp_path / "g.npy", (2, 2))
    assert fragment in str(info.value) and "g.npy" in str(info.value)


def test_missing_gaze_map(tmp_path):
    with pytest.raises(AnnotationError, match="Gaze map not found: .*nope.npy"):
        load_gaze_map(tmp_path / "nope.npy", (2, 2))


def test_load_annotations(tmp_path):
    np.save(tmp_path / "g.npy", np.ones((2, 2)))
    rec = Record(id="a", image=Path("/x/a.png"), boxes=(Box(0, 0, 2, 1),), fixations=((1.5, 2.5),),
                 gaze=tmp_path / "g.npy", source="m.jsonl:2")
    ann = load_annotations(rec, (4, 4))
    assert np.array_equal(np.argwhere(ann.mask), [[0, 0], [0, 1]])
    assert np.array_equal(np.argwhere(ann.fixations), [[2, 1]])
    assert ann.gaze.shape == (4, 4) and np.allclose(ann.gaze, 1.0)
    assert load_annotations(Record(id="b", image=Path("/x/b.png")), (4, 4)) == Annotations(None, None, None)
    bad = Record(id="c", image=Path("/x/c.png"), boxes=(Box(0, 0, 9, 1),), source="m.jsonl:4")
    with pytest.raises(AnnotationError, match=r"^c \(m.jsonl:4\): box 1 \[0, 0, 9, 1\] lies outside the image of 4x4"):
        load_annotations(bad, (4, 4))
