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
    assert pointing_game(s, _mask((3, 3), (1, 2))) is True
    assert pointing_game(s, _mask((3, 3), (0, 0), (2, 1))) is False
    # nearest mask pixel (2, 0) is sqrt(1**2 + 2**2) = sqrt(5) = 2.236 px from (1, 2)
    far = _mask((3, 3), (2, 0))
    assert pointing_game(s, far, tolerance=2) is False
    assert pointing_game(s, far, tolerance=math.sqrt(5)) is True  # inclusive bound
    assert pointing_game(s, far, tolerance=3) is True
    # exactly at the tolerance counts (TorchRay's strict d**2 < t**2 would not): (1, 0) is 2 px away
    assert pointing_game(s, _mask((3, 3), (1, 0)), tolerance=2) is True
    assert pointing_game(s, _mask((3, 3), (1, 0)), tolerance=1.999) is False


def test_pointing_game_ties_take_first_maximum_in_row_major_order():
    s = np.array([[0, 7, 0], [0, 0, 0], [0, 0, 7]], float)  # two maxima: (0, 1) first, (2, 2)
    assert pointing_game(s, _mask((3, 3), (0, 1))) is True
    assert pointing_game(s, _mask((3, 3), (2, 2))) is False


def test_pointing_game_constant_map_points_at_first_pixel():
    s = np.full((3, 4), 0.3)
    assert pointing_game(s, _mask((3, 4), (0, 0))) is True
    assert pointing_game(s, _mask((3, 4), (2, 3))) is False


def test_pointing_game_outside_references():
    # quantus 0.6.0 PointingGame().evaluate_batch(a_batch=S[None], s_batch=MASK[None]) -> True
    assert pointing_game(S, MASK) is True
    # ... with MASK2 -> False
    assert pointing_game(S, MASK2) is False
    # TorchRay PointingGame(tolerance=t).evaluate(MASK2, point=(6, 2)) (u = column, v = row):
    # t=5 -> miss, t=6 -> hit, t=15 -> hit (nearest mask pixel (6, 2) is sqrt(32) = 5.66 px away)
    assert pointing_game(S, MASK2, tolerance=5) is False
    assert pointing_game(S, MASK2, tolerance=6) is True
    assert pointing_game(S, MASK2, tolerance=15) is True


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


def test_relevance_rank_ties_broken_in_row_major_order():
    s = np.array([[1, 1], [1, 1]], float)
    assert relevance_rank(s, _mask((2, 2), (0, 0))) == 1.0  # the first pixel ranks first
    assert relevance_rank(s, _mask((2, 2), (1, 1))) == 0.0
    s = np.array([[0, 2], [2, 2]], float)  # K = 2: top two are (0, 1), (1, 0)
    assert relevance_rank(s, _mask((2, 2), (0, 1), (1, 1))) == 0.5


def test_relevance_rank_outside_reference():
    # quantus 0.6.0 RelevanceRankAccuracy().evaluate_batch(a_batch=S[None], s_batch=MASK[None]); K = 12
    assert relevance_rank(S, MASK) == pytest.approx(0.16666666666666666, abs=1e-15)


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
