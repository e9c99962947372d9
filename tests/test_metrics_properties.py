"""Property tests (hypothesis) for the metrics: invariances, ranges, oracles and validation.

Maps are small (at most 6 x 6) and integer-valued where a property needs exact order (a
monotone transform of close floats can merge two values into a tie and change a rank metric
legitimately).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auditor.metrics import (BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS, auc_borji, auc_judd, auc_roc, cc,
                             kl_div, nss, pointing_game, relevance_mass, relevance_rank, sim, spearman,
                             top_k_overlap)

# per test, not a global profile: other test modules keep their own settings
EXAMPLES = settings(max_examples=int(os.environ.get("METRICS_EXAMPLES", "60")), deadline=None)

shapes = st.tuples(st.integers(1, 6), st.integers(1, 6))


@st.composite
def int_map_and_mask(draw, lo=-20, hi=20):
    """An integer-valued float64 map and a non-empty boolean mask of the same shape."""
    shape = draw(shapes)
    s = draw(arrays(np.int64, shape, elements=st.integers(lo, hi))).astype(np.float64)
    m = draw(arrays(np.bool_, shape))
    assume(m.any())
    return s, m


@st.composite
def float_map_and_mask(draw):
    shape = draw(shapes)
    s = draw(arrays(np.float64, shape, elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)))
    m = draw(arrays(np.bool_, shape))
    assume(m.any())
    return s, m


@st.composite
def map_and_density(draw):
    shape = draw(shapes)
    s = draw(arrays(np.float64, shape, elements=st.floats(0, 1e3, allow_subnormal=False)))
    g = draw(arrays(np.float64, shape, elements=st.floats(0, 1e3, allow_subnormal=False)))
    assume(g.any())
    return s, g


def _same(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# ---------------------------------------------------------------- invariances

@EXAMPLES
@given(float_map_and_mask(), st.floats(1e-3, 1e3))
def test_relevance_mass_invariant_to_positive_scaling(sm, c):
    s, m = sm
    assert _same(relevance_mass(s, m), relevance_mass(c * s, m), rel=1e-9)


MONOTONE = [lambda x: 2 * x + 3, lambda x: x ** 3, lambda x: np.exp(x / 10), lambda x: np.arctan(x) * 5 - 1]


@EXAMPLES
@given(int_map_and_mask(), st.sampled_from(range(len(MONOTONE))))
def test_auc_roc_invariant_to_strictly_monotone_transforms(sm, which):
    s, m = sm
    assert _same(auc_roc(s, m), auc_roc(MONOTONE[which](s), m), abs_=1e-12)


@EXAMPLES
@given(int_map_and_mask(), st.integers(-1000, 1000))
def test_pointing_game_unchanged_by_adding_a_constant(sm, c):
    s, m = sm
    assert pointing_game(s, m) == pointing_game(s + c, m)
    assert pointing_game(s, m, tolerance=1.5) == pointing_game(s + c, m, tolerance=1.5)


@EXAMPLES
@given(int_map_and_mask(), st.floats(1e-2, 1e2), st.floats(-1e3, 1e3))
def test_nss_invariant_to_positive_affine_transforms(sm, a, b):
    s, m = sm
    assert _same(nss(s, m), nss(a * s + b, m), rel=1e-7, abs_=1e-9)


@EXAMPLES
@given(int_map_and_mask(), st.floats(1e-2, 1e2), st.floats(-1e3, 1e3))
def test_auc_judd_and_relevance_rank_invariant_to_positive_affine_transforms(sm, a, b):
    s, m = sm
    assume(not m.all())
    assert _same(auc_judd(s, m), auc_judd(a * s + b, m), abs_=1e-12)
    assert relevance_rank(s, m) == relevance_rank(a * s + b, m)


@EXAMPLES
@given(map_and_density(), st.floats(1e-2, 1e2))
def test_density_metrics_invariant_to_scaling(sg, c):
    s, g = sg
    assert _same(cc(s, g), cc(c * s, g), rel=1e-7, abs_=1e-9)
    assert _same(kl_div(s, g), kl_div(s, c * g), rel=1e-7, abs_=1e-9)
    assert _same(sim(s, g), sim(c * s, c * g), rel=1e-7, abs_=1e-9)


# ---------------------------------------------------------------- oracles

@EXAMPLES
@given(int_map_and_mask())
def test_auc_roc_equals_pairwise_count(sm):
    s, m = sm
    pos, neg = s[m], s[~m]
    if neg.size == 0:
        assert math.isnan(auc_roc(s, m))
        return
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc_roc(s, m) == pytest.approx(wins / (pos.size * neg.size), abs=1e-12)


@st.composite
def distinct_map_and_mask(draw):
    """A map whose values are a permutation of 0 .. HW-1 (no ties) and a non-empty mask."""
    h, w = draw(shapes)
    s = np.array(draw(st.permutations(range(h * w))), dtype=np.float64).reshape(h, w)
    m = draw(arrays(np.bool_, (h, w)))
    assume(m.any())
    return s, m


@EXAMPLES
@given(distinct_map_and_mask())
def test_auc_judd_bounds_rank_auc_from_above_without_ties(sm):
    # with distinct values, MIT's AUC-Judd points lie on the empirical ROC curve of fixated vs
    # unfixated pixels (thresholds at the fixated values); joining them by chords can only add area
    s, m = sm
    assume(not m.all())
    assert auc_roc(s, m) - 1e-12 <= auc_judd(s, m) <= 1.0


def _naive_average_ranks(x: np.ndarray) -> np.ndarray:
    x = x.ravel()
    less = (x[None, :] < x[:, None]).sum(1)
    equal = (x[None, :] == x[:, None]).sum(1)
    return less + (equal + 1) / 2.0


@EXAMPLES
@given(int_map_and_mask())
def test_spearman_matches_naive_rank_correlation_and_is_symmetric(sm):
    s, m = sm
    t = m.astype(float) + np.round(s / 7.0)  # ties on both sides
    rs, rt = _naive_average_ranks(s), _naive_average_ranks(t)
    if rs.std() == 0 or rt.std() == 0:
        assert math.isnan(spearman(s, t))
        return
    assert spearman(s, t) == pytest.approx(np.corrcoef(rs, rt)[0, 1], abs=1e-12)
    assert _same(spearman(s, t), spearman(t, s), abs_=1e-12)


# ---------------------------------------------------------------- ranges

@EXAMPLES
@given(float_map_and_mask())
def test_box_metrics_in_documented_ranges(sm):
    s, m = sm
    assert 0.0 <= pointing_game(s, m) <= 1.0
    for value in (relevance_mass(s, m), auc_roc(s, m)):
        assert math.isnan(value) or 0.0 <= value <= 1.0
    assert 0.0 <= relevance_rank(s, m) <= 1.0
    if not m.all():
        assert not math.isnan(auc_roc(s, m))
    if (s > 0).any():
        assert not math.isnan(relevance_mass(s, m))


@EXAMPLES
@given(float_map_and_mask())
def test_fixation_metrics_in_documented_ranges(sm):
    s, f = sm
    constant = s.max() == s.min()
    n = nss(s, f)
    assert math.isnan(n) == constant
    for value in (auc_judd(s, f), auc_borji(s, f, n_splits=10)):
        assert math.isnan(value) or 0.0 <= value <= 1.0
    assert math.isnan(auc_borji(s, f, n_splits=10)) == (constant or f.sum() < 2)


@EXAMPLES
@given(map_and_density())
def test_density_metrics_in_documented_ranges(sg):
    s, g = sg
    c = cc(s, g)
    assert math.isnan(c) == (s.max() == s.min() or g.max() == g.min())
    assert math.isnan(c) or -1.0 <= c <= 1.0
    assert kl_div(s, g) >= -1e-12
    flat_non_zero = any(a.any() and a.max() == a.min() for a in (s, g))  # MIT similarity.m: NaN
    assert math.isnan(sim(s, g)) == flat_non_zero
    assert flat_non_zero or 0.0 <= sim(s, g) <= 1.0 + 1e-12
    assert kl_div(g, g) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(sim(g, g)) if g.max() == g.min() else sim(g, g) == pytest.approx(1.0)


@EXAMPLES
@given(float_map_and_mask(), st.floats(0.01, 1.0))
def test_agreement_in_documented_ranges(sm, frac):
    s, m = sm
    t = s + m
    r = spearman(s, t)
    assert math.isnan(r) or -1.0 <= r <= 1.0
    assert 0.0 <= top_k_overlap(s, t, fraction=frac) <= 1.0
    assert top_k_overlap(s, s, fraction=frac) == 1.0  # ties too: the same order breaks them in both


# ---------------------------------------------------------------- validation

ALL = {**BOX_METRICS, **FIXATION_METRICS, **DENSITY_METRICS}
REFERENCE = {name: "bool" for name in (*BOX_METRICS, *FIXATION_METRICS)} | {name: "float" for name in DENSITY_METRICS}


def _reference(name: str, shape: tuple[int, int]) -> np.ndarray:
    ref = np.zeros(shape, bool)
    ref[0, 0] = True
    return ref if REFERENCE[name] == "bool" else ref + 0.5


@pytest.mark.parametrize("name", sorted(ALL))
@EXAMPLES
@given(shape=shapes, other=shapes)
def test_shape_mismatch_raises(name, shape, other):
    assume(shape != other)
    with pytest.raises(ValueError, match="shape"):
        ALL[name](np.ones(shape), _reference(name, other))


@pytest.mark.parametrize("name", sorted(ALL))
@EXAMPLES
@given(shape=shapes, bad=st.sampled_from([np.nan, np.inf, -np.inf]), data=st.data())
def test_non_finite_saliency_raises(name, shape, bad, data):
    s = np.ones(shape)
    s[data.draw(st.integers(0, shape[0] - 1)), data.draw(st.integers(0, shape[1] - 1))] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        ALL[name](s, _reference(name, shape))


@pytest.mark.parametrize("name", sorted(ALL))
@EXAMPLES
@given(shape=shapes, dtype=st.sampled_from([np.int64, np.uint8, np.float32]))
def test_reference_with_wrong_dtype_raises(name, shape, dtype):
    ref = _reference(name, shape)
    if REFERENCE[name] == "bool":  # a 0/1 integer or float mask is refused: cast it explicitly
        with pytest.raises(ValueError, match="boolean"):
            ALL[name](np.ones(shape), ref.astype(dtype))
    else:  # a density must not be boolean (fixations passed as a gaze map)
        with pytest.raises(ValueError, match="boolean"):
            ALL[name](np.ones(shape), ref > 0.5)


@pytest.mark.parametrize("name", sorted(ALL))
def test_saliency_with_wrong_dtype_or_rank_raises(name):
    ref = _reference(name, (2, 3))
    for bad in (np.ones((2, 3), bool), np.ones((2, 3), complex), np.full((2, 3), "a"), np.ones((1, 2, 3)),
                np.ones(6), np.ones((0, 3))):
        with pytest.raises(ValueError):
            ALL[name](bad, ref)


@pytest.mark.parametrize("name", sorted({**BOX_METRICS, **FIXATION_METRICS}))
def test_empty_mask_or_fixations_raise(name):
    with pytest.raises(ValueError, match="no True pixel"):
        ALL[name](np.arange(6.0).reshape(2, 3), np.zeros((2, 3), bool))


@EXAMPLES
@given(int_map_and_mask())
def test_inputs_are_not_modified(sm):
    s, m = sm
    s0, m0 = s.copy(), m.copy()
    for name, fn in {**BOX_METRICS, **FIXATION_METRICS}.items():
        fn(s, m)
    g = m.astype(float)
    for fn in DENSITY_METRICS.values():
        fn(np.abs(s), g)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(m, m0)
