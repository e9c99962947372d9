"""Localisation metrics, baselines and registries: hand-computed values and outside references.

Outside reference values were computed once in a throwaway venv (NOT project dependencies):
python 3.11.7, numpy 2.4.6, scikit-learn 1.9.1, quantus 0.6.0 (``evaluate_batch`` of
``PointingGame`` / ``RelevanceMassAccuracy`` / ``RelevanceRankAccuracy`` / ``TopKIntersection``,
pure numpy, no torch), scipy 1.17.1 (``scipy.signal.windows.gaussian``), and a numpy
transcription of TorchRay's ``PointingGame.evaluate`` (facebookresearch/TorchRay,
``torchray/benchmark/pointing_game.py``: ``accept = (v + u) < tolerance**2``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.metrics import (BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS, HIGHER_IS_BETTER, auc_roc,
                             centre_gaussian, pointing_game, relevance_mass, relevance_rank, uniform_random)

# Fixed inputs shared with the reference script.
S = np.random.default_rng(0).random((8, 10))  # no ties; argmax at (row 2, col 6)
MASK = np.zeros((8, 10), bool)
MASK[2:5, 3:7] = True
MASK2 = np.zeros((8, 10), bool)  # bottom-left, away from the maximum
MASK2[6:8, 0:3] = True
S_TIED = np.round(S * 4) / 4  # five distinct values, many ties


def _mask(shape, *pixels):
    m = np.zeros(shape, bool)
    for p in pixels:
        m[p] = True
    return m


# ---------------------------------------------------------------- pointing game

def test_pointing_game_hand():
    s = np.array([[0, 1, 0], [0, 0, 5], [0, 0, 0]], float)  # maximum at (1, 2)
    assert pointing_game(s, _mask((3, 3), (1, 2))) == 1.0
    assert pointing_game(s, _mask((3, 3), (0, 0), (2, 1))) == 0.0
    # nearest mask pixel (2, 0) is sqrt(1**2 + 2**2) = sqrt(5) = 2.236 px from (1, 2)
    far = _mask((3, 3), (2, 0))
    assert pointing_game(s, far, tolerance=2) == 0.0
    assert pointing_game(s, far, tolerance=math.sqrt(5)) == 1.0  # inclusive bound
    assert pointing_game(s, far, tolerance=3) == 1.0
    # exactly at the tolerance counts (TorchRay's strict d**2 < t**2 would not): (1, 0) is 2 px away
    assert pointing_game(s, _mask((3, 3), (1, 0)), tolerance=2) == 1.0
    assert pointing_game(s, _mask((3, 3), (1, 0)), tolerance=1.999) == 0.0


def test_pointing_game_several_maxima_score_the_share_that_hits():
    s = np.array([[0, 7, 0], [0, 0, 0], [0, 0, 7]], float)  # two maxima, (0, 1) and (2, 2)
    assert pointing_game(s, _mask((3, 3), (0, 1))) == 0.5    # the expected hit of a random maximum
    assert pointing_game(s, _mask((3, 3), (2, 2))) == 0.5    # the same: no row-major preference
    assert pointing_game(s, _mask((3, 3), (0, 1), (2, 2))) == 1.0
    assert pointing_game(s, _mask((3, 3), (1, 1))) == 0.0
    # tolerance applies to each maximum: mask pixel (1, 2) is 1 px from (2, 2), sqrt(2) px from (0, 1)
    assert pointing_game(s, _mask((3, 3), (1, 2)), tolerance=1) == 0.5
    assert pointing_game(s, _mask((3, 3), (1, 2)), tolerance=1.5) == 1.0


def test_pointing_game_constant_map_scores_chance_not_a_hit():
    # Quantus's rule (a hit if ANY maximum is on the object) would give 1 here, for every box
    s = np.full((3, 4), 0.3)
    assert pointing_game(s, _mask((3, 4), (0, 0))) == pytest.approx(1 / 12)
    assert pointing_game(s, _mask((3, 4), (2, 3))) == pytest.approx(1 / 12)
    assert pointing_game(s, np.ones((3, 4), bool)) == 1.0


def test_pointing_game_outside_references():
    # quantus 0.6.0 PointingGame().evaluate_batch(a_batch=S[None], s_batch=MASK[None]) -> True
    assert pointing_game(S, MASK) == 1.0
    # ... with MASK2 -> False
    assert pointing_game(S, MASK2) == 0.0
    # TorchRay PointingGame(tolerance=t).evaluate(MASK2, point=(6, 2)) (u = column, v = row):
    # t=5 -> miss, t=6 -> hit, t=15 -> hit (nearest mask pixel (6, 2) is sqrt(32) = 5.66 px away)
    assert pointing_game(S, MASK2, tolerance=5) == 0.0
    assert pointing_game(S, MASK2, tolerance=6) == 1.0
    assert pointing_game(S, MASK2, tolerance=15) == 1.0


@pytest.mark.parametrize("tolerance", [-1, float("nan"), float("inf"), "fifteen", None])
def test_pointing_game_rejects_bad_tolerance(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(S, MASK, tolerance=tolerance)


# ---------------------------------------------------------------- relevance mass / rank

def test_relevance_mass_hand():
    s = np.array([[1, -2, 0], [3, 0, 0], [0, 0, 4]], float)
    m = _mask((3, 3), (0, 0), (0, 1))
    # positive inside: 1 (the -2 is ignored); positive total: 1 + 3 + 4 = 8
    assert relevance_mass(s, m) == pytest.approx(1 / 8, abs=1e-15)
    assert relevance_mass(s, np.ones((3, 3), bool)) == 1.0


def test_relevance_mass_nan_without_positive_saliency():
    assert math.isnan(relevance_mass(np.zeros((2, 2)), _mask((2, 2), (0, 0))))
    assert math.isnan(relevance_mass(-np.ones((2, 2)), _mask((2, 2), (0, 0))))


def test_relevance_mass_outside_reference():
    # quantus 0.6.0 RelevanceMassAccuracy().evaluate_batch(a_batch=S[None], s_batch=MASK[None])
    # (quantus sums all values; S >= 0 here, so it equals the positive-only definition)
    assert relevance_mass(S, MASK) == pytest.approx(0.15905210023389446, rel=1e-12)


def test_relevance_rank_hand():
    s = np.array([[5, 4, 3], [2, 1, 0]], float)
    # K = 2; the two highest are (0, 0), (0, 1); only (0, 0) is in the mask -> 1/2
    assert relevance_rank(s, _mask((2, 3), (0, 0), (1, 1))) == 0.5
    assert relevance_rank(s, _mask((2, 3), (1, 2))) == 0.0
    assert relevance_rank(s, np.ones((2, 3), bool)) == 1.0


def test_relevance_rank_ties_give_fractional_credit():
    s = np.array([[1, 1], [1, 1]], float)  # K = 1 of 4 tied pixels: each has chance 1/4
    assert relevance_rank(s, _mask((2, 2), (0, 0))) == 0.25
    assert relevance_rank(s, _mask((2, 2), (1, 1))) == 0.25
    s = np.array([[0, 2], [2, 2]], float)  # K = 2 of the three 2s: 2/3 each; mask holds two of them
    assert relevance_rank(s, _mask((2, 2), (0, 1), (1, 1))) == pytest.approx(2 / 3)
    s = np.array([[3, 2], [2, 0]], float)  # K = 2: the 3 surely, then one of the two 2s (1/2 each)
    assert relevance_rank(s, _mask((2, 2), (0, 0), (1, 0))) == pytest.approx((1 + 0.5) / 2)
    assert relevance_rank(s, _mask((2, 2), (1, 0), (1, 1))) == pytest.approx(0.5 / 2)


def test_relevance_rank_expected_value_matches_random_tie_breaking():
    # the closed form equals the mean over every order of the tied pixels (brute force, 4! orders)
    import itertools

    s = np.array([[2, 1, 1], [1, 1, 0]], float)
    m = _mask((2, 3), (0, 1), (1, 2), (0, 0))  # K = 3: the 2, then two of the four 1s
    tied = [(0, 1), (0, 2), (1, 0), (1, 1)]
    scores = []
    for order in itertools.permutations(tied):
        top = [(0, 0), *order[:2]]
        scores.append(sum(m[p] for p in top) / 3)
    assert relevance_rank(s, m) == pytest.approx(np.mean(scores), abs=1e-15)


def test_relevance_rank_outside_reference():
    # quantus 0.6.0 RelevanceRankAccuracy().evaluate_batch(a_batch=S[None], s_batch=MASK[None]); K = 12
    # (S has no ties, so random tie-breaking changes nothing)
    assert relevance_rank(S, MASK) == pytest.approx(0.16666666666666666, abs=1e-15)


# ---------------------------------------------------------------- ties: no orientation bias

def _centred_blob(h=16, w=16):
    """A ReLU'd-Grad-CAM-like map: a positive blob in the middle, exact zeros elsewhere."""
    r, c = np.mgrid[:h, :w]
    return np.maximum(0.0, 1.0 - ((r - 7.5) ** 2 + (c - 7.5) ** 2) / 9.0)


def test_half_box_case_scores_the_same_for_top_and_bottom():
    # issue 15: row-major tie-breaking gave relevance rank 0.989 against the top half and 0.011
    # against the bottom half for the same centred blob; every box metric must treat them alike
    s = _centred_blob()
    top, bottom = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    top[:8], bottom[8:] = True, True
    for name, fn in BOX_METRICS.items():
        assert fn(s, top) == pytest.approx(fn(s, bottom), abs=1e-12), name
    # K = 128 > the 32 blob pixels: 16 blob pixels in each half, then 96 of the 224 tied zeros
    # (112 per half) at chance 96/224 -> (16 + 112 * 96/224) / 128 = 1/2 (row-major: 0.875 / 0.125)
    assert np.count_nonzero(s[:8]) == np.count_nonzero(s[8:]) == 16
    assert relevance_rank(s, top) == pytest.approx((16 + 112 * 96 / 224) / 128)
    assert pointing_game(s, top) == 0.5  # the 4 central maxima, 2 in each half


@pytest.mark.parametrize("seed", range(6))
def test_rotated_image_with_rotated_boxes_scores_the_same(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(4, 20, 2)
    s = [np.round(rng.random((h, w)) * 3) / 3, np.maximum(0, rng.normal(size=(h, w))), np.zeros((h, w))][seed % 3]
    m = np.zeros((h, w), bool)
    r0, c0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
    m[r0:r0 + rng.integers(1, h - r0 + 1), c0:c0 + rng.integers(1, w - c0 + 1)] = True
    for k in (1, 2, 3):
        for name, fn in BOX_METRICS.items():
            a, b = fn(s, m), fn(np.rot90(s, k), np.rot90(m, k))
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12), (name, k)
    for name, fn in BOX_METRICS.items():  # a mirror image too
        a, b = fn(s, m), fn(s[:, ::-1], m[:, ::-1])
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12), name


def test_top_k_overlap_ties_get_fractional_credit_and_no_orientation_bias():
    from auditor.metrics import top_k_overlap

    s = _centred_blob()
    shifted = np.roll(s, 4, axis=0)
    a = top_k_overlap(s, shifted, fraction=0.5)
    assert a == pytest.approx(top_k_overlap(np.rot90(s), np.rot90(shifted), fraction=0.5), abs=1e-12)
    # the same flat map twice: one random order breaks the ties in both, so the sets are equal
    z = np.zeros((8, 8))
    assert top_k_overlap(z, z, fraction=0.5) == 1.0
    assert top_k_overlap(s, s, fraction=0.5) == 1.0
    # k = 2 in [3, 1, 1, 0]: the 3, then one of the two 1s (1/2 each); the other map's top 2 is {3, 0}
    x, y = np.array([[3.0, 1.0, 1.0, 0.0]]), np.array([[3.0, 0.0, 0.0, 1.0]])
    inter = 1 + 0.5 * 0  # the 3 in both; y's second pick is the 1 at flat index 3, x never picks it
    assert top_k_overlap(x, y, fraction=0.5) == pytest.approx(inter / (4 - inter))
    x2 = np.array([[3.0, 1.0, 1.0, 0.0]])
    y2 = np.array([[3.0, 1.0, 0.0, 0.0]])  # y2 picks flat 1 surely; x2 picks it with chance 1/2
    assert top_k_overlap(x2, y2, fraction=0.5) == pytest.approx(1.5 / (4 - 1.5))


# ---------------------------------------------------------------- AUC-ROC

def test_auc_roc_hand():
    # the scikit-learn docs example: scores 0.1, 0.4, 0.35, 0.8 for labels 0, 0, 1, 1 -> 0.75
    s = np.array([[0.1, 0.4], [0.35, 0.8]])
    assert auc_roc(s, _mask((2, 2), (1, 0), (1, 1))) == 0.75
    # ties count half: positives {1, 2} vs negatives {1, 1}: (0.5 + 0.5 + 1 + 1) / 4
    s = np.array([[1, 1], [1, 2]], float)
    assert auc_roc(s, _mask((2, 2), (0, 1), (1, 1))) == 0.75
    assert auc_roc(np.full((2, 3), 4.0), _mask((2, 3), (0, 0))) == 0.5


def test_auc_roc_perfect_and_inverted():
    s = np.arange(12, dtype=float).reshape(3, 4)
    top = s >= 8
    assert auc_roc(s, top) == 1.0
    assert auc_roc(-s, top) == 0.0


def test_auc_roc_nan_when_mask_covers_image():
    assert math.isnan(auc_roc(S, np.ones_like(MASK)))


def test_auc_roc_outside_reference():
    # sklearn 1.9.1 roc_auc_score(MASK.ravel(), S.ravel()) / (..., S_TIED.ravel())
    assert auc_roc(S, MASK) == pytest.approx(0.5306372549019608, abs=1e-15)
    assert auc_roc(S_TIED, MASK) == pytest.approx(0.5416666666666666, abs=1e-15)


def test_auc_roc_large_map_is_fast_and_matches_pair_count():
    rng = np.random.default_rng(11)
    s = np.round(rng.random((300, 400)) * 50)  # 120k pixels, heavy ties
    m = rng.random((300, 400)) < 0.2
    pos, neg = np.sort(s[m]), np.sort(s[~m])
    # Mann-Whitney by counting: for each positive, #neg below + 0.5 #neg equal
    below = np.searchsorted(neg, pos, "left")
    equal = np.searchsorted(neg, pos, "right") - below
    expected = (below + 0.5 * equal).sum() / (pos.size * neg.size)
    assert auc_roc(s, m) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- baselines

def test_centre_gaussian_hand_and_outside_reference():
    g = centre_gaussian((5, 7))
    assert g.dtype == np.float64 and g.shape == (5, 7)
    assert g[2, 3] == 1.0 and g.max() == 1.0
    # corner: exp(-0.5 ((2 / 1.25)**2 + (3 / 1.75)**2))
    assert g[0, 0] == pytest.approx(math.exp(-0.5 * ((2 / 1.25) ** 2 + (3 / 1.75) ** 2)), rel=1e-14)
    # scipy 1.17.1: outer(windows.gaussian(5, 1.25), windows.gaussian(7, 1.75)), divided by its max; row 0
    ref = [0.06396701269749609, 0.1447045466691342, 0.23615537873587647, 0.27803730045319414,
           0.23615537873587647, 0.1447045466691342, 0.06396701269749609]
    np.testing.assert_allclose(g[0], ref, rtol=1e-13)


def test_centre_gaussian_even_size_peaks_at_one_between_pixels():
    g = centre_gaussian((4, 6))
    assert g.max() == 1.0
    np.testing.assert_array_equal(np.argwhere(g == 1.0), [[1, 2], [1, 3], [2, 2], [2, 3]])
    # scipy 1.17.1: outer(windows.gaussian(4, 1.0), windows.gaussian(6, 1.5)) / max, row 0
    ref = [0.09697196786440508, 0.23587708298570007, 0.36787944117144233, 0.36787944117144233,
           0.23587708298570007, 0.09697196786440508]
    np.testing.assert_allclose(g[0], ref, rtol=1e-13)
    np.testing.assert_allclose(g, g[::-1, ::-1], rtol=0, atol=0)


def test_centre_gaussian_sigma_frac():
    wide, narrow = centre_gaussian((9, 9), sigma_frac=1.0), centre_gaussian((9, 9), sigma_frac=0.1)
    assert wide[0, 0] > narrow[0, 0]
    assert narrow[0, 4] == pytest.approx(math.exp(-0.5 * (4 / 0.9) ** 2), rel=1e-14)
    with pytest.raises(ValueError, match="sigma_frac"):
        centre_gaussian((9, 9), sigma_frac=0)


def test_uniform_random_is_seeded_numpy_generator():
    a = uniform_random((3, 5), seed=7)
    np.testing.assert_array_equal(a, np.random.default_rng(7).random((3, 5)))
    assert not np.array_equal(a, uniform_random((3, 5), seed=8))
    assert a.dtype == np.float64 and ((a >= 0) & (a < 1)).all()


@pytest.mark.parametrize("shape", [(0, 3), (3,), (2, 2, 2), (2.5, 3), (-1, 4), (True, 3)])
def test_baselines_reject_bad_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        centre_gaussian(shape)
    with pytest.raises(ValueError, match="shape"):
        uniform_random(shape, seed=0)


# ---------------------------------------------------------------- registries

def test_registries_and_directions():
    assert set(BOX_METRICS) == {"pointing_game", "relevance_mass", "relevance_rank", "auc_roc"}
    assert set(FIXATION_METRICS) == {"nss", "auc_judd", "auc_borji"}
    assert set(DENSITY_METRICS) == {"cc", "kl_div", "sim"}
    for name in (*BOX_METRICS, *FIXATION_METRICS, *DENSITY_METRICS):
        assert HIGHER_IS_BETTER[name] is (name != "kl_div")


def test_box_registry_scores_like_the_functions():
    for name, fn in BOX_METRICS.items():
        assert float(fn(S, MASK)) == pytest.approx(float(globals()[name](S, MASK)))
