"""All maps of an image scored in one call (issue 19) give the per-map functions' values, bit for bit.

:func:`auditor.metrics.batched.score_maps` shares one sort per map and the references' parts;
:func:`auditor.scoring.score_item` post-processes maps with the same grid in one upsampling and
reuses the centre baseline. Each is compared here with the per-map path it replaced, on random
maps and references with ties (quantised maps, flat maps, ``-0.0`` beside ``0.0``), constant maps,
full masks, one fixation, every pixel fixated, a constant gaze map, and NaN maps.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from auditor import maps as maplib
from auditor import scoring
from auditor.data.annotations import Annotations
from auditor.metrics import BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS
from auditor.metrics.baselines import centre_gaussian, uniform_random
from auditor.metrics.batched import key_values, order_keys, score_maps


def _maps(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """float32 [8, H, W] in [0, 1]: smooth, noisy, quantised (many ties), flat at 0 with a peak,
    constant, all zero, two tied maxima, and -0.0 beside 0.0."""
    h, w = shape
    r, c = np.mgrid[:h, :w]
    smooth = np.exp(-((r - h * rng.random()) ** 2 + (c - w * rng.random()) ** 2) / (2 * (0.3 * max(h, w)) ** 2))
    peak = np.zeros(shape)
    peak[rng.integers(h), rng.integers(w)] = 1.0
    two = rng.random(shape) * 0.5
    two.flat[rng.choice(h * w, min(2, h * w), replace=False)] = 1.0
    signed_zero = np.round(rng.random(shape) * 3) / 3
    signed_zero[signed_zero == 0] = -0.0
    signed_zero.flat[::5] = 0.0
    maps = [smooth / smooth.max(), rng.random(shape), np.round(rng.random(shape) * 4) / 4, peak,
            np.full(shape, 0.3), np.zeros(shape), two, signed_zero]
    return np.stack(maps).astype(np.float32)


def _references(rng: np.random.Generator, shape: tuple[int, int], case: str):
    h, w = shape
    mask = np.zeros(shape, bool)
    r0, c0 = rng.integers(max(1, h // 2)), rng.integers(max(1, w // 2))
    mask[r0:r0 + rng.integers(1, h - r0 + 1), c0:c0 + rng.integers(1, w - c0 + 1)] = True
    fix = np.zeros(shape, bool)
    fix.flat[rng.choice(h * w, min(h * w, 12), replace=False)] = True
    gaze = rng.random(shape) ** 4
    if case == "full mask":
        mask[:] = True
    elif case == "one pixel":
        mask[:] = False
        mask[rng.integers(h), rng.integers(w)] = True
        fix[:] = False
        fix[rng.integers(h), rng.integers(w)] = True  # auc_borji: NaN
    elif case == "all fixated":
        fix[:] = True  # auc_judd: NaN (no unfixated pixel)
    elif case == "constant gaze":
        gaze = np.full(shape, 0.7)  # cc and sim: NaN
    return mask, fix, gaze


def _per_map(maps: np.ndarray, mask, fix, gaze) -> dict[str, np.ndarray]:
    tables = ((mask, BOX_METRICS), (fix, FIXATION_METRICS), (gaze, DENSITY_METRICS))
    return {name: np.array([float(fn(m, ref)) for m in maps]) for ref, table in tables if ref is not None
            for name, fn in table.items()}


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 9), (30, 44), (64, 64)])
@pytest.mark.parametrize("case", ["boxes", "full mask", "one pixel", "all fixated", "constant gaze"])
def test_score_maps_equals_the_per_map_functions(shape, case):
    rng = np.random.default_rng(zlib.crc32(repr((shape, case)).encode()))
    maps = _maps(rng, shape)
    mask, fix, gaze = _references(rng, shape, case)
    want = _per_map(maps, mask, fix, gaze)
    got = score_maps(maps, mask=mask, fixations=fix, gaze_map=gaze)
    assert list(got) == list(want)  # the registries' order: rows and results keep their column order
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)  # bitwise (NaN == NaN)
    assert np.isnan(want["nss"][4]) and np.isnan(want["auc_roc"][1]) == mask.all()  # the cases bite
    # a known order (the centre baseline's) gives the same values as sorting
    orders = [np.argsort(m, axis=None) if i % 2 else None for i, m in enumerate(maps)]
    again = score_maps(maps, mask=mask, fixations=fix, gaze_map=gaze, orders=orders)
    for name in want:
        np.testing.assert_array_equal(again[name], want[name], err_msg=name)


@pytest.mark.parametrize("scale, shift", [(-2.0, 1.0), (8.0, -4.0), (4.0, 0.0)])
def test_score_maps_equals_the_per_map_functions_on_signed_and_large_maps(scale, shift):
    # values outside [0, 2) (a "none"-normalised method): the keys are sorted as int64, not packed
    rng = np.random.default_rng(3)
    maps = _maps(rng, (23, 31)) * np.float32(scale) + np.float32(shift)
    mask, fix, _ = _references(rng, (23, 31), "boxes")
    want = _per_map(maps, mask, fix, None)
    got = score_maps(maps, mask=mask, fixations=fix)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_score_maps_values_by_hand():
    # 2 x 2 maps; mask = top row, fixation at the top-left pixel
    maps = np.array([[[1, 0], [0, 0]], [[0, 1], [1, 1]]], np.float32)
    mask = np.array([[True, True], [False, False]])
    fix = np.array([[True, False], [False, False]])
    got = score_maps(maps, mask=mask, fixations=fix, names=["pointing_game", "relevance_rank", "auc_roc", "auc_judd"])
    assert got["pointing_game"].tolist() == [1.0, 1 / 3]  # one of the three tied maxima is on the object
    assert got["relevance_rank"].tolist() == [2 / 3, 1 / 3]  # top 2: (1 + 1/3 of a tied 0) / 2; (2/3 of a tied 1) / 2
    # AUC-ROC: map 0: mask {1, 0} vs background {0, 0}: pairs (1>0) x2, (0=0) x2 -> (2 + 1) / 4
    assert got["auc_roc"].tolist() == [0.75, 0.25]
    assert got["auc_judd"].tolist() == [1.0, 0.5]  # map 1: the fixation at the minimum: one threshold, (1, 1)


def test_score_maps_refuses_what_the_per_map_functions_refuse():
    maps = np.zeros((2, 3, 3), np.float32)
    maps[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_maps(maps, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="float32"):
        score_maps(maps.astype(np.float64), mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="no True pixel"):
        score_maps(np.zeros((1, 3, 3), np.float32), mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="non-negative"):  # KL of a signed map ("none" normalisation)
        score_maps(np.full((1, 3, 3), -1.0, np.float32), gaze_map=np.ones((3, 3)))
    empty = score_maps(np.zeros((0, 3, 3), np.float32), mask=np.ones((3, 3), bool), fixations=np.ones((3, 3), bool))
    assert all(v.shape == (0,) for v in empty.values()) and len(empty) == 7


def test_order_keys_order_like_the_floats():
    v = np.array([-np.inf, -3.5, -1e-40, -0.0, 0.0, 1e-45, 0.25, 1.0, np.inf], np.float32)
    k = order_keys(v)
    assert (np.diff(k) >= 0).all() and k[3] == k[4] == 0 and (np.diff(k)[[0, 1, 2, 4, 5, 6, 7]] > 0).all()
    np.testing.assert_array_equal(key_values(k), v.astype(np.float64))
    unsigned = np.sort(np.array([0.0, 1e-45, 1e-38, 0.5, 1.0, 1.5, 3.0, np.inf], np.float32))  # no sign bit: the bits
    k = order_keys(unsigned)
    assert k.dtype == np.int32 and (np.diff(k) > 0).all()
    np.testing.assert_array_equal(key_values(k), unsigned.astype(np.float64))


def _old_score_item(image_id, shape, ann, raw, modes):
    """The per-map path score_item took before maps were scored together."""
    metrics, status = {}, {}
    for method, token_map in raw.items():
        post = maplib.PostProcess.from_mode(modes[method])
        problem = post.problem(token_map)
        if problem:
            status[method] = problem
            metrics[method] = {k: float("nan") for k in scoring.score(np.zeros(shape, np.float32) + 0.5, ann)}
        else:
            metrics[method] = scoring.score(post(token_map, shape), ann)
    for name, base in (("centre", centre_gaussian(shape)), ("random", uniform_random(shape, seed=zlib.crc32(image_id.encode())))):
        metrics[name] = scoring.score(maplib.BASELINE_POSTPROCESS(base, shape), ann)
    return metrics, status


@pytest.mark.parametrize("shape", [(20, 20), (37, 52)])
def test_score_item_equals_the_per_map_path(shape):
    rng = np.random.default_rng(shape[1])
    mask, fix, gaze = _references(rng, shape, "boxes")
    ann = Annotations(mask=mask, fixations=fix, gaze=gaze)
    grid = rng.standard_normal((4, 5)).astype(np.float32)
    raw = {"gradcam": torch.as_tensor(grid), "signed": torch.as_tensor(-grid),  # two maps, one grid, one upsampling
           "rollout": torch.as_tensor(rng.random((3, 3), dtype=np.float32)),
           "nan_map": torch.full((4, 5), float("nan")), "flat": torch.zeros(4, 5),
           "coarse": torch.tensor([[0.0, 0.5], [1.0, 0.5]])}  # ties at every scale
    modes = {"gradcam": "relu_minmax", "signed": "relu_minmax", "rollout": "minmax", "nan_map": "minmax",
             "flat": "relu_minmax", "coarse": "minmax"}
    want, want_status = _old_score_item("img-7", shape, ann, raw, modes)
    got, status = scoring.score_item("img-7", shape, ann, raw, modes, None)
    assert status == want_status and set(status) == {"nan_map", "flat"}
    assert list(got) == list(want)  # methods in their order, NaN rows in place, then the baselines
    for method in want:
        assert list(got[method]) == list(want[method])
        np.testing.assert_array_equal(list(got[method].values()), list(want[method].values()), err_msg=method)


def test_score_layers_equals_the_per_map_path():
    from auditor.layers import score_layers

    rng = np.random.default_rng(5)
    layers = torch.as_tensor(rng.random((2, 4, 3, 3), dtype=np.float32))  # [B, L, h, w]
    layers[1, 2] = 0.5  # a constant layer: None
    layers[1, 0] = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 0]])  # tied maxima
    mask, _, _ = _references(rng, (17, 23), "boxes")
    post = maplib.PostProcess.from_mode("minmax")
    for i in range(2):
        got = score_layers({"cls_attention": {"per_layer": layers}}, i, mask, {"cls_attention": "minmax"})["cls_attention"]
        for k in ("pointing_game", "relevance_mass"):
            want = [None if post.problem(m) else float(BOX_METRICS[k](post(m, mask.shape), mask)) for m in layers[i]]
            assert got[k] == want, (i, k)
    assert got["pointing_game"][2] is None
