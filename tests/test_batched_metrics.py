"""All maps of an image scored in one call (issue 19) give the per-map functions' values, bit for bit.

:func:`auditor.metrics.batched.score_maps` computes each metric for all the maps at once (rows of
one float64 array) and shares one sort per map and the references' parts;
:func:`auditor.scoring.score_item` post-processes maps with the same grid in one upsampling (and
one min-max of all of them) and reuses the centre baseline. Each is compared here, bit for bit
(``-0.0`` is not ``0.0``; NaN is NaN), with the per-map path it replaced, on random maps and
references with ties (quantised maps, flat maps, ``-0.0`` beside ``0.0``, a crop's constant frame),
constant maps, full masks, one-pixel masks, one fixation, every pixel fixated, all pixels but one
fixated, a constant gaze map, NaN maps, and sizes above NumPy's 8192-element buffer.
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


def assert_same_bits(got: np.ndarray, want: np.ndarray, err_msg: str = "") -> None:
    """Equal float64 bits (so ``-0.0 != 0.0``), any NaN equal to any NaN."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, err_msg
    same = (got.view(np.uint64) == want.view(np.uint64)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{err_msg}: {got[~same]} != {want[~same]} at {np.flatnonzero(~same)}"


def _maps(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """float32 [9, H, W] in [0, 1]: smooth, noisy, quantised (many ties), flat at 0 with a peak,
    constant, all zero, two tied maxima, -0.0 beside 0.0, and noise in a constant frame at its
    minimum (a centre crop's outside)."""
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
    framed = np.full(shape, 0.1)
    framed[h // 4:h - h // 4, w // 5:w - w // 5] = 0.1 + rng.random((h - 2 * (h // 4), w - 2 * (w // 5)))
    maps = [smooth / smooth.max(), rng.random(shape), np.round(rng.random(shape) * 4) / 4, peak,
            np.full(shape, 0.3), np.zeros(shape), two, signed_zero, framed]
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
    elif case == "all but one fixated":
        fix[:] = True
        if h * w > 1:  # one unfixated pixel: AUC-Judd's rate has one step
            fix[rng.integers(h), rng.integers(w)] = False
    elif case == "constant gaze":
        gaze = np.full(shape, 0.7)  # cc and sim: NaN
    return mask, fix, gaze


def _per_map(maps: np.ndarray, mask, fix, gaze) -> dict[str, np.ndarray]:
    tables = ((mask, BOX_METRICS), (fix, FIXATION_METRICS), (gaze, DENSITY_METRICS))
    return {name: np.array([float(fn(m, ref)) for m in maps]) for ref, table in tables if ref is not None
            for name, fn in table.items()}


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 9), (30, 44), (64, 64), (97, 131)])
@pytest.mark.parametrize("case", ["boxes", "full mask", "one pixel", "all fixated", "all but one fixated",
                                  "constant gaze"])
def test_score_maps_equals_the_per_map_functions(shape, case):
    rng = np.random.default_rng(zlib.crc32(repr((shape, case)).encode()))
    maps = _maps(rng, shape)
    mask, fix, gaze = _references(rng, shape, case)
    want = _per_map(maps, mask, fix, gaze)
    got = score_maps(maps, mask=mask, fixations=fix, gaze_map=gaze)
    assert list(got) == list(want)  # the registries' order: rows and results keep their column order
    for name in want:
        assert_same_bits(got[name], want[name], err_msg=name)
    assert np.isnan(want["nss"][4]) and np.isnan(want["auc_roc"][1]) == mask.all()  # the cases bite
    # a known order (the centre baseline's) gives the same values as sorting
    orders = [np.argsort(m, axis=None) if i % 2 else None for i, m in enumerate(maps)]
    again = score_maps(maps, mask=mask, fixations=fix, gaze_map=gaze, orders=orders)
    for name in want:
        assert_same_bits(again[name], want[name], err_msg=name)


@pytest.mark.parametrize("scale, shift", [(-2.0, 1.0), (8.0, -4.0), (4.0, 0.0)])
def test_score_maps_equals_the_per_map_functions_on_signed_and_large_maps(scale, shift):
    # values outside [0, 2) (a "none"-normalised method): the keys are sorted as int64, not packed
    rng = np.random.default_rng(3)
    maps = _maps(rng, (23, 31)) * np.float32(scale) + np.float32(shift)
    mask, fix, _ = _references(rng, (23, 31), "boxes")
    want = _per_map(maps, mask, fix, None)
    got = score_maps(maps, mask=mask, fixations=fix)
    for name in want:
        assert_same_bits(got[name], want[name], err_msg=name)


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
        assert_same_bits(list(got[method].values()), list(want[method].values()), err_msg=method)


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


def _borji_area_before(at_fix, negatives, step):
    """auditor.metrics.gaze.borji_area as it was before borji_areas (commit f29b553), verbatim."""
    from auditor.metrics.gaze import _count_at_least

    n_fix, n_splits = at_fix.size, len(negatives)
    tops = np.maximum(at_fix[-1], negatives.max(1))
    k_top = int(np.floor(tops / step * (1 + 1e-10)).max())
    thresholds = step * np.arange(k_top, -1, -1)
    tp = (n_fix - np.searchsorted(at_fix, thresholds, side="left")) / n_fix
    y = np.concatenate(([0.0], tp, [1.0]))
    aucs = np.empty(n_splits)
    chunk = max(1, (1 << 20) // (k_top + 1))
    for i in range(0, n_splits, chunk):
        neg = negatives[i:i + chunk]
        fp = _count_at_least(neg, step, k_top)[:, ::-1] / n_fix
        x = np.concatenate((np.zeros((len(neg), 1)), fp, np.ones((len(neg), 1))), axis=1)
        aucs[i:i + chunk] = (np.diff(x, axis=1) * (y[1:] + y[:-1])).sum(1) / 2.0
    return float(aucs.mean())


@pytest.mark.parametrize("step", [0.1, 0.07, 1e-5])  # 1e-5: 100001 thresholds, the splits in chunks
def test_borji_areas_equal_the_per_map_core_before_it(step):
    from auditor.metrics.gaze import borji_area, borji_areas

    rng = np.random.default_rng(11)
    at_fix = np.sort(np.round(rng.random((5, 13)), 2), axis=1)  # ties at the thresholds
    negatives = np.round(rng.random((5, 100, 13)), 2)
    negatives[1] *= 0.55  # a lower top: another k_top, its own group
    at_fix[1] *= 0.55
    negatives[3, :, 0] = 1.0  # the top reached by a negative
    want = [_borji_area_before(a, n, step) for a, n in zip(at_fix, negatives)]
    assert_same_bits(borji_areas(at_fix, negatives, step), want)
    assert_same_bits([borji_area(a, n, step) for a, n in zip(at_fix, negatives)], want)


def test_postprocess_of_a_stack_equals_each_map_alone():
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((6, 5, 7)).astype(np.float32)
    raw[1] = 0.25  # constant: all zeros after min-max
    raw[2] = -np.abs(raw[2])  # all zeros after the ReLU
    raw[3, 0, 0] = -0.0
    for mode in ("minmax", "relu_minmax", "none"):
        post = maplib.PostProcess.from_mode(mode)
        for region in (None, (0.1, 0.0, 0.8, 1.0)):
            got = post(raw, (23, 17), region)
            for g, m in zip(got, raw):
                want = post(m, (23, 17), region)
                assert g.dtype == want.dtype == np.float32
                assert (g.view(np.uint32) == want.view(np.uint32)).all(), (mode, region)
    with pytest.raises(ValueError, match="NaN"):
        maplib.PostProcess()(np.full((2, 3, 3), np.nan, np.float32), (4, 4))


def test_problems_name_what_problem_names():
    raw = np.ones((7, 3, 3), np.float32)
    raw[0, 0, 0] = 2.0  # fine
    raw[1, 1, 1] = np.nan
    raw[2, 1, 1] = np.inf
    raw[3] = -1.0
    raw[3, 0, 0] = -2.0  # fine as it is, constant (all 0) after the ReLU
    raw[4, 2, 2] = -np.inf  # not finite, although the ReLU would hide it
    raw[6, 0, 0] = 3.0
    for post in (maplib.PostProcess(), maplib.PostProcess(relu=True)):
        got = post.problems(torch.as_tensor(raw))
        assert got == [post.problem(m) for m in raw]
        assert got[0] is None and got[5] is not None and "NaN" in got[1] and "NaN" in got[2] and "NaN" in got[4]
        assert (got[3] is None) != post.relu
    assert maplib.PostProcess().problems(np.zeros((2, 0, 3), np.float32)) == [maplib.PostProcess().problem(np.zeros((0, 3)))] * 2
