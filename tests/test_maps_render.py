"""Upsampling, normalisation and overlay rendering with hand-computable values."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.maps import map_problem, normalize, upsample
from auditor.render import blend, colorize, colormap_lut, overlay, patch_edges, patch_grid


def test_upsample_keeps_token_values_at_patch_centres():
    token = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    up = upsample(token, (4, 4))
    assert up.shape == (4, 4) and up.dtype == np.float32
    # align_corners=False: pixel 0 lies a quarter-token before token 0's centre -> clamped
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up[:, 0], [0.0, 0.5, 1.5, 2.0])
    assert upsample(np.zeros((3, 2, 2)), (5, 7)).shape == (3, 5, 7)


def test_normalize_modes_and_constant_maps():
    m = np.array([[-2.0, 0.0], [2.0, 6.0]])
    np.testing.assert_allclose(normalize(m), [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(normalize(m, "relu_minmax"), [[0.0, 0.0], [1 / 3, 1.0]])
    np.testing.assert_allclose(normalize(m, "none"), m)
    np.testing.assert_array_equal(normalize(np.full((2, 3), 7.0)), np.zeros((2, 3)))
    np.testing.assert_array_equal(normalize(-np.ones((2, 2)), "relu_minmax"), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        normalize(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="normalisation must be"):
        normalize(m, "zscore")


def test_map_problem_reasons():
    assert map_problem(np.ones((3, 3))) == "the map is constant (e.g. zero gradients): nothing to localise"
    assert "NaN" in map_problem(np.array([[np.inf, 0.0]]))
    assert map_problem(-np.arange(4.0).reshape(2, 2), "relu_minmax").startswith("the map is constant")
    assert map_problem(np.arange(4.0).reshape(2, 2)) is None


def test_jet_is_red_for_high_and_blue_for_low():
    lut = colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[255, 0] > 100 and lut[255, 2] == 0  # dark red
    assert lut[0, 2] > 100 and lut[0, 0] == 0  # dark blue
    np.testing.assert_array_equal(colorize(np.array([[0.0, 1.0]])), lut[[[0, 255]]])
    with pytest.raises(ValueError, match="unknown colormap"):
        colormap_lut("no-such-map")


def test_blend_arithmetic():
    img = np.full((1, 2, 3), 100, np.uint8)
    col = np.full((1, 2, 3), 200, np.uint8)
    np.testing.assert_array_equal(blend(img, col, 0.25), np.full((1, 2, 3), 125))
    with pytest.raises(ValueError, match="alpha"):
        blend(img, col, 1.5)


def test_overlay_is_at_the_image_size():
    img = np.zeros((30, 45, 3), np.uint8)
    out = overlay(img, np.ones((30, 45)), alpha=1.0)
    assert out.shape == (30, 45, 3)
    np.testing.assert_array_equal(out[0, 0], colormap_lut("jet")[255])
    with pytest.raises(ValueError, match="differ in size"):
        overlay(img, np.ones((10, 10)))


def test_patch_grid_tints_each_patch_with_its_value():
    assert patch_edges(3, 10).tolist() == [0, 3, 7, 10]
    img = np.zeros((40, 60, 3), np.uint8)
    token = np.array([[0.0, 1.0], [0.0, 0.0]])
    out = patch_grid(img, token, alpha=1.0, top_k=0)
    lut = colormap_lut("jet")
    np.testing.assert_array_equal(out[10, 45], lut[255])  # top-right patch: high
    np.testing.assert_array_equal(out[30, 15], lut[0])  # bottom-left: low
    np.testing.assert_array_equal(out[0, 10], [255, 255, 255])  # grid line at the top edge
    np.testing.assert_array_equal(out[10, 30], [255, 255, 255])  # grid line between the columns


def test_to_image_applies_the_relu_before_upsampling():
    from auditor.maps import to_image

    raw = np.array([[-4.0, 2.0]])
    # ReLU first: [0, 2] -> upsampled [0, 0.5, 1.5, 2] -> / 2; (upsampling first would give
    # [-4, -2.5, 0.5, 2] -> ReLU [0, 0, 0.5, 2] -> [0, 0, 0.25, 1])
    np.testing.assert_allclose(to_image(raw, (1, 4), "relu_minmax"), [[0.0, 0.25, 0.75, 1.0]])
    np.testing.assert_allclose(to_image(raw, (1, 4), "minmax"), [[0.0, 0.25, 0.75, 1.0]])


def test_side_by_side_scales_to_one_height_with_white_gaps():
    from auditor.render import side_by_side

    a = np.zeros((4, 6, 3), np.uint8)
    b = np.full((2, 2, 3), 100, np.uint8)  # scaled x2 to height 4 -> 4 x 4
    out = side_by_side([a, b], gap=3)
    assert out.shape == (4, 6 + 3 + 4, 3)
    assert (out[:, :6] == 0).all() and (out[:, 6:9] == 255).all() and (out[:, 9:] == 100).all()
