"""Gaze metrics (MIT Saliency Benchmark conventions): hand-computed values and outside references.

Outside reference values were computed once in a throwaway venv (NOT project dependencies):
python 3.11.7, numpy 2.4.6, scipy 1.17.1, pysaliency 0.2.22 (``pysaliency.metrics.NSS / CC /
MIT_KLDiv / SIM`` and ``pysaliency.roc.general_roc(..., judd=1)``; numba 0.68.1; its
``np.trapz`` call aliased to ``np.trapezoid``, removed/renamed in numpy 2.4), and a line-by-line
numpy transcription of the MIT MATLAB code (github.com/cvzoya/saliency,
``code_forMetrics/NSS.m, AUC_Judd.m, AUC_Borji.m, CC.m, KLdiv.m, similarity.m``) written in
that throwaway script.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.metrics import auc_borji, auc_judd, cc, fixations_to_map, kl_div, nss, sim
from auditor.metrics.gaze import EPS

# Fixed inputs shared with the reference script.
S = np.random.default_rng(0).random((8, 10))
G = np.random.default_rng(1).random((8, 10))
FIX = np.zeros((8, 10), bool)
FIX[[1, 3, 4, 6, 7], [2, 4, 5, 8, 0]] = True
S_TIED = np.round(S * 4) / 4


def _fix(shape, *pixels):
    m = np.zeros(shape, bool)
    for p in pixels:
        m[p] = True
    return m


# ---------------------------------------------------------------- NSS

def test_nss_hand():
    s = np.array([[0, 0], [0, 4]], float)
    # mean 1; sample std (ddof=1): sqrt((1 + 1 + 1 + 9) / 3) = 2
    assert nss(s, _fix((2, 2), (1, 1))) == pytest.approx((4 - 1) / 2, abs=1e-15)
    assert nss(s, _fix((2, 2), (0, 0), (1, 1))) == pytest.approx((-0.5 + 1.5) / 2, abs=1e-15)


def test_nss_constant_map_is_nan():
    assert math.isnan(nss(np.full((3, 3), 2.5), _fix((3, 3), (1, 1))))


def test_nss_outside_references():
    # MIT NSS.m transcription -> 0.47198726920424505;
    # pysaliency 0.2.22 mean(NSS(S, xs, ys)) = 0.4749651364057067 uses the population std (ddof=0):
    # times sqrt(79 / 80) -> 0.471987269204245, the same value
    assert nss(S, FIX) == pytest.approx(0.47198726920424505, rel=1e-13)
    assert nss(S, FIX) == pytest.approx(0.4749651364057067 * math.sqrt(79 / 80), rel=1e-13)


# ---------------------------------------------------------------- AUC-Judd

def test_auc_judd_hand():
    s = np.array([[1, 2], [3, 4]], float)  # normalised: 0, 1/3, 2/3, 1
    f = _fix((2, 2), (1, 1), (0, 1))       # fixated values 1 and 1/3; F = 2, N = 4
    # t = 1:   #{S >= 1} = 1   -> tp 1/2, fp (1 - 1) / 2 = 0
    # t = 1/3: #{S >= 1/3} = 3 -> tp 1,   fp (3 - 2) / 2 = 1/2
    # curve (0,0) (0,1/2) (1/2,1) (1,1): area 0 + 0.5 * 0.75 + 0.5 * 1 = 0.875
    assert auc_judd(s, f) == pytest.approx(0.875, abs=1e-15)


def test_auc_judd_perfect_and_worst():
    s = np.arange(9, dtype=float).reshape(3, 3)
    assert auc_judd(s, _fix((3, 3), (2, 2))) == 1.0  # (0,0) (0,1) (1,1)
    assert auc_judd(s, _fix((3, 3), (0, 0))) == 0.5  # (0,0) (1,1) (1,1): MIT's curve never goes below chance here


def test_auc_judd_undefined_cases():
    assert math.isnan(auc_judd(np.ones((3, 3)), _fix((3, 3), (0, 0))))  # constant map
    assert math.isnan(auc_judd(S, np.ones_like(FIX)))                 # no unfixated pixel


def test_auc_judd_jitter_is_seeded_and_breaks_ties():
    const = np.ones((4, 4))
    f = _fix((4, 4), (1, 1), (2, 3))
    a = auc_judd(const, f, jitter=True, seed=3)
    assert 0.0 <= a <= 1.0 and a == auc_judd(const, f, jitter=True, seed=3)
    # on a map without near-ties, jitter of 1e-7 changes nothing
    assert auc_judd(S, FIX, jitter=True) == pytest.approx(auc_judd(S, FIX), abs=1e-12)


def test_auc_judd_outside_references():
    # pysaliency 0.2.22 general_roc(S[FIX], S[~FIX], judd=1)[0] and the MIT AUC_Judd.m
    # transcription (jitter = 0) both -> 0.7013333333333334 (fixated values distinct)
    assert auc_judd(S, FIX) == pytest.approx(0.7013333333333334, abs=1e-15)
    # tied fixated values: pysaliency -> 0.6266666666666666 (MIT's transcription: 0.6026666666666667)
    assert auc_judd(S_TIED, FIX) == pytest.approx(0.6266666666666666, abs=1e-15)


def test_auc_judd_ties_among_fixations_stay_in_range():
    # S = [1, 0, 0], both 0s fixated. MIT AUC_Judd.m (jitter=0) transcription -> -0.25: its i / F
    # steps through the tie (fp = (3 - 1) / 1 = 2 at the first threshold). pysaliency 0.2.22
    # general_roc(judd=1) -> 0.5: one threshold t = 0, tp = fp = 1
    assert auc_judd(np.array([[1.0, 0.0, 0.0]]), np.array([[False, True, True]])) == 0.5


# ---------------------------------------------------------------- AUC-Borji

def test_auc_borji_hand():
    # fixations on the 1 and on a 0 of s = [[1, 0], [0, 0]]; two random negatives per split (F = 2);
    # thresholds 1.0, 0.9, ..., 0: tp = 1/2 for t > 0 and 1 at t = 0; fp = (draws of pixel 0) / 2 =: q
    # for t > 0 and 1 at t = 0; points (0, 0), (q, 1/2), (1, 1): area q / 4 + (1 - q) 3 / 4 = 3/4 - q / 2
    s = np.array([[1, 0], [0, 0]], float)
    draws = np.random.default_rng(5).integers(0, 4, size=(40, 2))  # auditor's draw: (n_splits, F) flat indices
    expected = np.mean(0.75 - 0.5 * (draws == 0).mean(1))
    assert len(set(0.75 - 0.5 * (draws == 0).mean(1))) == 3  # all three cases occur
    assert auc_borji(s, _fix((2, 2), (0, 0), (1, 1)), n_splits=40, seed=5) == pytest.approx(expected, abs=1e-15)


def test_auc_borji_single_fixation_is_nan():
    # MIT AUC_Borji.m (github.com/cvzoya/saliency, code_forMetrics, commit 26e7105) cannot score one
    # fixation: randfix = S(r), r of size [1, Nsplits], is an Nsplits x 1 column (MATLAB keeps the
    # indexed vector's orientation), so randfix(:, 2) is out of range; its Python ports return NaN
    # for sum(fixation_map) <= 1. One fixated pixel here: NaN, whatever the map.
    s = np.array([[1, 0.95], [0, 0]], float)
    for pixel in ((0, 0), (1, 1)):
        assert math.isnan(auc_borji(s, _fix((2, 2), pixel)))
    assert not math.isnan(auc_borji(s, _fix((2, 2), (0, 0), (0, 1))))


def _borji_one_split_at_a_time(s, f, n_splits=100, step=0.1, seed=0):
    """MIT AUC_Borji.m transcribed split by split (auditor's draws), to check the vectorised version."""
    s = ((s - s.min()) / (s.max() - s.min())).ravel()
    at_fix = s[f.ravel()]
    draws = np.random.default_rng(seed).integers(0, s.size, size=(n_splits, at_fix.size))
    aucs = []
    for neg in s[draws]:
        top = max(at_fix.max(), neg.max())
        thresholds = [step * k for k in range(math.floor(top / step * (1 + 1e-10)), -1, -1)]
        tp = [0.0] + [(at_fix >= t).mean() for t in thresholds] + [1.0]
        fp = [0.0] + [(neg >= t).mean() for t in thresholds] + [1.0]
        aucs.append(np.trapezoid(tp, fp))
    return float(np.mean(aucs))


@pytest.mark.parametrize("seed", range(12))
def test_auc_borji_equals_the_split_by_split_transcription(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 30, 2)
    s = [rng.random((h, w)), np.round(rng.random((h, w)) * 10) / 10, rng.integers(0, 3, (h, w)) * 1.0][seed % 3]
    f = rng.random((h, w)) < 0.3  # (rounded maps put values exactly on the 0.1 thresholds)
    f.flat[rng.choice(h * w, 2, replace=False)] = True  # at least two fixations (one: NaN)
    for step in (0.1, 0.05, 0.3):
        expected = _borji_one_split_at_a_time(s, f, n_splits=30, step=step, seed=seed)
        assert auc_borji(s, f, n_splits=30, step_size=step, seed=seed) == pytest.approx(expected, abs=1e-12)


def test_auc_borji_compares_exactly_at_thresholds_where_division_rounds_up():
    # 0.85 / 0.05 rounds to 17.0, but 0.05 * 17 = 0.8500000000000001 > 0.85: 0.85 is below that threshold
    s = np.array([[1.0, 0.85, 0.63], [0.0, 0.85, 0.91]])
    f = _fix((2, 3), (0, 1), (1, 2))
    for step in (0.05, 0.07):
        expected = _borji_one_split_at_a_time(s, f, n_splits=50, step=step, seed=3)
        assert auc_borji(s, f, n_splits=50, step_size=step, seed=3) == pytest.approx(expected, abs=1e-12)


def test_auc_borji_converges_to_expected_value():
    s = np.array([[1, 0], [0, 0]], float)  # expected AUC (see the hand case): 3/4 - E[q] / 2 = 3/4 - 1/8
    assert auc_borji(s, _fix((2, 2), (0, 0), (1, 1)), n_splits=4000) == pytest.approx(0.625, abs=0.02)


def test_auc_borji_seed_and_options():
    assert auc_borji(S, FIX, seed=1) == auc_borji(S, FIX, seed=1)
    assert auc_borji(S, FIX, seed=1) != auc_borji(S, FIX, seed=2)
    assert math.isnan(auc_borji(np.zeros((3, 3)), _fix((3, 3), (0, 0))))
    for bad in ({"n_splits": 0}, {"step_size": 0}, {"step_size": -0.1}, {"n_splits": 2.5}):
        with pytest.raises(ValueError):
            auc_borji(S, FIX, **bad)


def test_auc_borji_outside_reference():
    # MIT AUC_Borji.m transcription fed the same random pixels as auditor draws with seed 0
    # (np.random.default_rng(0).integers(0, 80, size=(100, 5)).T as MATLAB's r), stepSize 0.1
    assert auc_borji(S, FIX) == pytest.approx(0.6472000000000001, abs=1e-14)
    assert auc_borji(S_TIED, FIX) == pytest.approx(0.6348, abs=1e-14)


# ---------------------------------------------------------------- CC

def test_cc_hand():
    a = np.array([[1, 2], [3, 4]], float)
    assert cc(a, 2 * a + 1) == pytest.approx(1.0)
    assert cc(a, -a) == pytest.approx(-1.0)
    # centred (3,-1,-1,-1)/4 and (-1,3,-1,-1)/4: dot -4/16, norms 12/16 -> -1/3
    assert cc(_fix((2, 2), (0, 0)).astype(float), _fix((2, 2), (0, 1)).astype(float)) == pytest.approx(-1 / 3)


def test_cc_nan_when_either_constant():
    assert math.isnan(cc(np.ones((2, 3)), G[:2, :3]))
    assert math.isnan(cc(G[:2, :3], np.zeros((2, 3))))


def test_cc_outside_references():
    # pysaliency 0.2.22 CC(S, G) = -0.040201836985276386; scipy 1.17.1 pearsonr -> -0.04020183698527639;
    # MIT CC.m transcription -> -0.040201836985276365
    assert cc(S, G) == pytest.approx(-0.04020183698527639, rel=1e-12)


# ---------------------------------------------------------------- KL divergence

def test_kl_div_hand():
    # saliency uniform (1/4 each), gaze all on one pixel: 1 * log(eps + 1 / (1/4 + eps)) = log 4
    assert kl_div(np.ones((2, 2)), _fix((2, 2), (0, 0)).astype(float)) == pytest.approx(math.log(4), rel=1e-12)
    assert kl_div(G, G) == pytest.approx(0.0, abs=1e-12)
    assert kl_div(3 * G, G) == pytest.approx(0.0, abs=1e-12)  # both are normalised to sum 1


def test_kl_div_all_zero_saliency_is_large_finite_as_in_mit():
    # MIT leaves an all-zero map as zeros: sum 0.25 * log(eps + 0.25 / eps) over 4 pixels
    value = kl_div(np.zeros((2, 2)), np.ones((2, 2)))
    assert value == pytest.approx(math.log(EPS + 0.25 / EPS), rel=1e-12)
    assert 34 < value < 35


def test_kl_div_rejects_negative_saliency():
    with pytest.raises(ValueError, match="non-negative"):
        kl_div(S - 0.5, G)


def test_kl_div_outside_references():
    # pysaliency 0.2.22 MIT_KLDiv(S, G) and the MIT KLdiv.m transcription -> 0.535827615420913
    assert kl_div(S, G) == pytest.approx(0.535827615420913, rel=1e-13)


# ---------------------------------------------------------------- SIM

def test_sim_hand():
    one = _fix((2, 2), (0, 0)).astype(float)                       # -> (1, 0, 0, 0)
    two = _fix((2, 2), (0, 0), (0, 1)).astype(float)               # -> (1/2, 1/2, 0, 0)
    assert sim(one, two) == pytest.approx(0.5)
    assert sim(G, G) == pytest.approx(1.0)
    assert sim(np.zeros((2, 2)), two) == 0.0                       # all zero: left as zeros
    # min-max first: adding a constant to the saliency changes nothing
    assert sim(S + 10, G) == pytest.approx(sim(S, G), rel=1e-12)


def test_sim_constant_non_zero_map_is_nan_as_mit():
    # MIT similarity.m (github.com/cvzoya/saliency, code_forMetrics, commit 3e3f9ec): a map with a
    # non-zero value is min-max normalised, (m - min) / (max - min) = 0 / 0 = NaN everywhere for a
    # constant map, and "if sum(isnan(map1(:))) == length(map1(:)) ... return" leaves score = nan.
    two = _fix((2, 2), (0, 0), (0, 1)).astype(float)
    assert math.isnan(sim(np.full((2, 2), 7.0), two))
    assert math.isnan(sim(two, np.full((2, 2), 0.25)))             # a constant (uniform) gaze map too
    assert sim(np.zeros((2, 2)), two) == 0.0                       # all zero: MIT leaves it zero -> 0


def test_sim_outside_references():
    # MIT similarity.m transcription on (S, G) -> 0.6656369231355692; pysaliency 0.2.22
    # SIM(S - S.min(), G - G.min()) (no min-max step there, so both maps start at 0) -> the same
    assert sim(S, G) == pytest.approx(0.6656369231355692, rel=1e-13)
    assert sim(S - S.min(), G - G.min()) == pytest.approx(0.6656369231355692, rel=1e-13)


# ---------------------------------------------------------------- density / fixation validation

def test_density_metrics_reject_bad_gaze_maps():
    for fn in (kl_div, sim):
        with pytest.raises(ValueError, match="negative"):
            fn(S, G - 0.5)
        with pytest.raises(ValueError, match="all zero"):
            fn(S, np.zeros_like(G))
        with pytest.raises(ValueError, match="boolean"):
            fn(S, FIX)


def test_fixation_metrics_reject_empty_and_non_bool_fixations():
    for fn in (nss, auc_judd, auc_borji):
        with pytest.raises(ValueError, match="no True pixel"):
            fn(S, np.zeros_like(FIX))
        with pytest.raises(ValueError, match="boolean"):
            fn(S, FIX.astype(int))


# ---------------------------------------------------------------- fixations_to_map

def test_fixations_to_map_puts_each_point_in_the_pixel_that_contains_it():
    # pixel (r, c) covers [c, c + 1) x [r, r + 1): (x, y) -> [floor(y), floor(x)]
    m = fixations_to_map([(0, 0), (2.4, 1.6), (1.5, 0.5), (1.5, 0.5), (3.99, 2.99)], (3, 4))
    expected = np.zeros((3, 4), bool)
    expected[0, 0] = expected[1, 2] = expected[0, 1] = expected[2, 3] = True
    np.testing.assert_array_equal(m, expected)
    assert m.dtype == bool
    assert not fixations_to_map([], (2, 2)).any()


@pytest.mark.parametrize("point", [(4, 0), (4.2, 0), (0, 3), (-0.1, 0), (float("nan"), 1)])
def test_fixations_to_map_names_the_point_outside(point):
    with pytest.raises(ValueError, match=r"fixation 1 at \(x=") as err:
        fixations_to_map([(0, 0), point], (3, 4))
    assert "4x3" in str(err.value)


def test_fixations_to_map_rejects_bad_points_and_shape():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        fixations_to_map([(1, 2, 3)], (3, 4))
    with pytest.raises(ValueError, match="shape"):
        fixations_to_map([(1, 1)], (3, 0))
