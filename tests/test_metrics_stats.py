"""Bootstrap CIs, the paired permutation test, ranks and map agreement.

Outside reference values were computed once in a throwaway venv (NOT project dependencies):
python 3.11.7, numpy 2.4.6, scipy 1.17.1 (``scipy.stats.bootstrap``, ``permutation_test``,
``spearmanr``), quantus 0.6.0 (``TopKIntersection.evaluate_batch``, pure numpy).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from auditor.metrics import (Summary, bootstrap_ci, cc, paired_bootstrap_ci, paired_permutation_test, spearman,
                             top_k_overlap)
from auditor.metrics import agreement, gaze
from auditor.metrics.stats import rank_average, top_k_indices

# ---------------------------------------------------------------- bootstrap_ci


def test_bootstrap_two_values_hand():
    # resample means of {1, 3}: 1 (p 1/4), 2 (p 1/2), 3 (p 1/4) -> 2.5% / 97.5% quantiles are 1 and 3
    s = bootstrap_ci([1.0, np.nan, 3.0])
    assert (s.mean, s.ci_low, s.ci_high, s.n, s.n_nan) == (2.0, 1.0, 3.0, 2, 1)


def test_bootstrap_edge_cases():
    empty = bootstrap_ci([np.nan, np.nan])
    assert math.isnan(empty.mean) and math.isnan(empty.ci_low) and math.isnan(empty.ci_high)
    assert (empty.n, empty.n_nan) == (0, 2)
    assert bootstrap_ci([]).n == 0
    one = bootstrap_ci([np.inf, 0.25])
    assert (one.mean, one.ci_low, one.ci_high, one.n, one.n_nan) == (0.25, 0.25, 0.25, 1, 1)
    const = bootstrap_ci([0.7] * 5)
    assert const.ci_low == pytest.approx(0.7) and const.ci_high == pytest.approx(0.7)


def test_bootstrap_booleans_count_as_zero_one():
    s = bootstrap_ci(np.array([True, False, True, True]))
    assert s.mean == 0.75 and s.n == 4 and 0.0 <= s.ci_low <= 0.75 <= s.ci_high <= 1.0


def test_bootstrap_is_seeded():
    x = np.random.default_rng(1).random(30)
    assert bootstrap_ci(x, seed=4) == bootstrap_ci(x, seed=4)
    assert bootstrap_ci(x, seed=4) != bootstrap_ci(x, seed=5)


def test_bootstrap_confidence_widens_interval():
    x = np.random.default_rng(1).random(30)
    narrow, wide = bootstrap_ci(x, confidence=0.5), bootstrap_ci(x, confidence=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_bootstrap_outside_reference():
    # scipy 1.17.1 bootstrap((vals,), np.mean, n_resamples=20000, confidence_level=0.95,
    # method="percentile", random_state=np.random.default_rng(0)) -> (0.4205768236231197,
    # 0.5635988337570933). scipy draws its resample indices the same way (one
    # rng.integers(0, n, (n_resamples, n)) call) and takes the same np.quantile, so the two agree
    # to rounding; should either side change its draws, the Monte Carlo error of these bounds
    # (about 6e-4 at 20000 resamples) is what a looser tolerance would have to allow.
    vals = np.random.default_rng(3).normal(0.5, 0.2, size=40)
    s = bootstrap_ci(vals, n_boot=20000, seed=0)
    assert s.mean == pytest.approx(vals.mean(), rel=1e-15)
    assert s.ci_low == pytest.approx(0.4205768236231197, rel=1e-12)
    assert s.ci_high == pytest.approx(0.5635988337570933, rel=1e-12)


def test_summary_is_frozen_and_serialisable():
    s = bootstrap_ci([1.0, 2.0])
    assert set(s.to_dict()) == {"mean", "ci_low", "ci_high", "n", "n_nan"}
    assert isinstance(s.to_dict()["n"], int) and isinstance(s.to_dict()["mean"], float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mean = 0.0  # type: ignore[misc]
    assert isinstance(s, Summary)


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"confidence": 1.0}, {"confidence": 0}, {"confidence": 1.5}])
def test_bootstrap_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], **kwargs)


def test_bootstrap_rejects_non_vectors():
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.ones((2, 2)))
    with pytest.raises(ValueError, match="numbers"):
        bootstrap_ci(["a", "b"])


# ---------------------------------------------------------------- paired statistics

def test_paired_bootstrap_drops_incomplete_pairs():
    s = paired_bootstrap_ci([1.0, 2.0, 3.0, np.nan, 0.0], [2.0, 3.0, 4.0, 5.0, np.inf])
    assert (s.mean, s.ci_low, s.ci_high, s.n, s.n_nan) == (1.0, 1.0, 1.0, 3, 2)  # b - a = 1 each


def test_paired_bootstrap_sign_is_b_minus_a():
    a = np.random.default_rng(0).random(25)
    s = paired_bootstrap_ci(a, a - 0.5)
    assert s.ci_high < 0 and s.mean == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="pair"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_paired_bootstrap_outside_reference():
    # scipy 1.17.1 bootstrap((b - a,), np.mean, n_resamples=5000, confidence_level=0.9, method="percentile",
    # random_state=np.random.default_rng(3)) -> (-0.07879961567361538, 0.7858747685344825); same draws
    # as ours (see test_bootstrap_outside_reference), so equal to rounding
    a = np.random.default_rng(4).normal(0, 1, size=12)
    b = a + np.random.default_rng(5).normal(0.4, 1, size=12)
    s = paired_bootstrap_ci(a, b, n_boot=5000, confidence=0.9, seed=3)
    assert s.ci_low == pytest.approx(-0.07879961567361538, rel=1e-12)
    assert s.ci_high == pytest.approx(0.7858747685344825, rel=1e-12)
    assert s.mean == pytest.approx(float(np.mean(b - a)), rel=1e-15)


def test_permutation_exact_hand():
    # d = (1, 2): sums over sign flips 3, -1, 1, -3 -> |.| >= 3 in 2 of 4
    assert paired_permutation_test([0.0, 0.0], [1.0, 2.0]) == 0.5
    # d = (1, 1, 1): |sum| = 3 only for all + / all - -> 2 of 8
    assert paired_permutation_test(np.zeros(3), np.ones(3)) == 0.25
    assert paired_permutation_test([1.0, 2.0], [1.0, 2.0]) == 1.0  # no difference
    assert math.isnan(paired_permutation_test([np.nan], [1.0]))


def test_permutation_exact_outside_reference():
    # scipy 1.17.1 permutation_test((a, b), mean(y - x), permutation_type="samples",
    # alternative="two-sided", n_resamples=inf) -> 0.224609375 (= 230 / 1024, exact over 2**12)
    a = np.random.default_rng(4).normal(0, 1, size=12)
    b = a + np.random.default_rng(5).normal(0.4, 1, size=12)
    assert paired_permutation_test(a, b) == 0.224609375


def test_permutation_random_close_to_exact():
    # n = 30 > 16: random sign flips. Exact p = 0.46322418935596943, by meet-in-the-middle
    # enumeration of all 2**30 sign vectors (two halves of 2**15 sums each) in the throwaway script.
    # 10000 draws: Monte Carlo sd 0.005.
    a = np.random.default_rng(6).normal(0, 1, size=30)
    b = a + np.random.default_rng(7).normal(0.3, 1, size=30)
    p = paired_permutation_test(a, b)
    assert p == pytest.approx(0.46322418935596943, abs=0.02)
    assert p == paired_permutation_test(a, b, seed=0) != paired_permutation_test(a, b, seed=1)


def test_permutation_random_never_zero():
    # n = 20 identical differences: only 2 of 2**20 sign vectors are as extreme; with 999 draws
    # none is (almost surely, and for seed 0 certainly), so p = (1 + 0) / (1 + 999)
    assert paired_permutation_test(np.zeros(20), np.ones(20), n_permutations=999) == 1 / 1000


# ---------------------------------------------------------------- ranks

def test_rank_average_hand():
    np.testing.assert_array_equal(rank_average(np.array([3, 1, 4, 1, 5])), [3, 1.5, 4, 1.5, 5])
    np.testing.assert_array_equal(rank_average(np.array([[2, 2], [2, 2]])), [2.5] * 4)


def test_top_k_indices_ties_row_major():
    np.testing.assert_array_equal(top_k_indices(np.array([1, 3, 3, 0, 3]), 2), [1, 2])


# ---------------------------------------------------------------- agreement

def test_agreement_reuses_gaze_cc():
    assert agreement.cc is gaze.cc is cc


def test_spearman_hand():
    a = np.array([[1, 2], [3, 4]], float)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): centred dot 4.5, norms^2 4.5 and 5 -> 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman(np.array([[1, 1], [2, 3]], float), a) == pytest.approx(math.sqrt(0.9))
    assert math.isnan(spearman(np.ones((2, 2)), a))


def test_spearman_outside_reference():
    # scipy 1.17.1 spearmanr(S.ravel(), B.ravel()) -> 0.1830520393811533 and, with ties,
    # spearmanr(S_TIED.ravel(), round(B * 3) / 3 .ravel()) -> 0.1968797346157599
    s = np.random.default_rng(0).random((8, 10))
    b = np.random.default_rng(2).random((8, 10))
    assert spearman(s, b) == pytest.approx(0.1830520393811533, rel=1e-12)
    assert spearman(np.round(s * 4) / 4, np.round(b * 3) / 3) == pytest.approx(0.1968797346157599, rel=1e-12)


def test_top_k_overlap_hand():
    a = np.arange(10, dtype=float).reshape(2, 5)  # top 2 (fraction 0.2 of 10): flat 9, 8
    b = a.copy()
    b[1, 3], b[1, 2] = 2.0, 8.0                   # top 2 of b: flat 9, 7
    assert top_k_overlap(a, b, fraction=0.2) == pytest.approx(1 / 3)  # |{9}| / |{7, 8, 9}|
    assert top_k_overlap(a, a, fraction=0.2) == 1.0
    assert top_k_overlap(a, -a, fraction=0.2) == 0.0
    assert top_k_overlap(a, -a, fraction=1.0) == 1.0
    assert top_k_overlap(a, b, fraction=0.01) == 1.0  # k = ceil(0.1) = 1: both pick flat 9


def test_top_k_overlap_outside_reference():
    # quantus 0.6.0 TopKIntersection(k=8).evaluate_batch(a_batch=S[None], s_batch=top8(C)[None]) -> 0.5,
    # with C = S + 0.5 B and top8(C) its 8 largest pixels: |A & B| = 4 -> IoU 4 / (16 - 4) = 1/3
    s = np.random.default_rng(0).random((8, 10))
    c = s + 0.5 * np.random.default_rng(2).random((8, 10))
    assert top_k_overlap(s, c, fraction=0.1) == pytest.approx(1 / 3)


def test_agreement_validates():
    with pytest.raises(ValueError, match="shape"):
        spearman(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="fraction"):
        top_k_overlap(np.ones((2, 2)), np.ones((2, 2)), fraction=0)
    with pytest.raises(ValueError, match="fraction"):
        top_k_overlap(np.ones((2, 2)), np.ones((2, 2)), fraction=1.5)
