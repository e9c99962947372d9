"""cluster_bootstrap_ci: few-shot CIs resample episodes (and images), not rows as independent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.metrics.stats import bootstrap_ci, cluster_bootstrap_ci


def test_whole_clusters_are_drawn():
    """Three episodes whose three rows agree (0, 1, 2). A resample is the mean of 3 drawn
    episodes: all three the first one has probability 1/27 = 3.7% > 2.5%, so the 95% CI is
    exactly [0, 2]. Resampling the 9 rows as independent needs all 9 draws from one episode
    (probability 1/3**9) for those ends: its CI is far narrower."""
    values, episode = np.repeat([0.0, 1.0, 2.0], 3), np.repeat([0, 1, 2], 3)
    s = cluster_bootstrap_ci(values, episode)
    assert (s.mean, s.ci_low, s.ci_high, s.n, s.n_nan) == (1.0, 0.0, 2.0, 9, 0)
    rows = bootstrap_ci(values)
    assert 0.3 < rows.ci_low and rows.ci_high < 1.7


def test_one_value_per_cluster_is_the_row_bootstrap_draw_for_draw():
    x = np.random.default_rng(3).random(7)
    assert cluster_bootstrap_ci(x, [f"ep{i}" for i in range(7)], seed=5) == bootstrap_ci(x, seed=5)


def test_weights_make_it_the_mean_of_episode_means():
    """Episode a: 3 hits; episode b: 1 miss. Pooled 3/4; per episode (FewTURE's mean) (1 + 0) / 2.
    Two episodes drawn with replacement: the mean is 0, 1/2 or 1 (1/4, 1/2, 1/4): CI [0, 1]."""
    hits, episode = [True, True, True, False], ["a", "a", "a", "b"]
    assert cluster_bootstrap_ci(hits, episode).mean == 0.75
    s = cluster_bootstrap_ci(hits, episode, weights=[1 / 3, 1 / 3, 1 / 3, 1.0])
    assert (s.mean, s.ci_low, s.ci_high) == (0.5, 0.0, 1.0)


def test_images_that_repeat_across_episodes_are_clusters_too():
    """Two episodes with the same two images; image 0 always scores 0, image 1 always 1. Every
    episode's mean is 1/2, so resampling episodes alone shows no spread at all; the pigeonhole
    bootstrap also resamples the images: both draws image 0 (1/4) give 0, both image 1 give 1."""
    values, episode, image = [0.0, 1.0, 0.0, 1.0], [0, 0, 1, 1], ["img0", "img1", "img0", "img1"]
    by_episode = cluster_bootstrap_ci(values, episode)
    assert (by_episode.ci_low, by_episode.ci_high) == (0.5, 0.5)
    both = cluster_bootstrap_ci(values, episode, image)
    assert (both.mean, both.ci_low, both.ci_high) == (0.5, 0.0, 1.0)


def test_nan_values_are_dropped_and_counted():
    s = cluster_bootstrap_ci([1.0, math.nan, 3.0, math.inf], [0, 0, 1, 1])
    assert (s.mean, s.n, s.n_nan, s.ci_low, s.ci_high) == (2.0, 2, 2, 1.0, 3.0)
    empty = cluster_bootstrap_ci([math.nan], [0])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.ci_low)
    one = cluster_bootstrap_ci([1.0, 2.0], ["ep0", "ep0"])  # a single episode: no spread to estimate
    assert (one.mean, one.ci_low, one.ci_high) == (1.5, 1.5, 1.5)


def test_seeded():
    x, ep, img = np.arange(12.0) % 5, np.arange(12) // 3, np.arange(12) % 4
    assert cluster_bootstrap_ci(x, ep, img, seed=1) == cluster_bootstrap_ci(x, ep, img, seed=1)
    assert cluster_bootstrap_ci(x, ep, img, seed=1) != cluster_bootstrap_ci(x, ep, img, seed=2)


@pytest.mark.parametrize("args, kwargs, fragment", [
    (([1.0, 2.0],), {}, "at least one array of cluster labels"),
    (([1.0, 2.0], [0]), {}, "one cluster label per value"),
    (([1.0, 2.0], [0, 1]), {"weights": [1.0, -1.0]}, "non-negative"),
    (([1.0, 2.0], [0, 1]), {"confidence": 1.0}, "confidence"),
])
def test_bad_input_is_explained(args, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        cluster_bootstrap_ci(*args, **kwargs)


def test_permutation_p_value_flips_whole_clusters():
    """Hand-computed exact sign-flip p-values: 8 differences of +1 are 2/256 as independent
    pairs; in 2 episodes of 4 they are the 2 sums [4, 4], p = 2/4; with images crossed
    (4 images in both episodes: sums [2, 2, 2, 2], p = 2/16) the larger, 1/2, is reported."""
    from auditor.metrics.stats import paired_permutation_test

    a, b = np.zeros(8), np.ones(8)
    episodes, images = [0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 2, 3, 0, 1, 2, 3]
    assert paired_permutation_test(a, b) == 2 / 256
    assert paired_permutation_test(a, b, clusters=(episodes,)) == 2 / 4
    assert paired_permutation_test(a, b, clusters=(images,)) == 2 / 16
    assert paired_permutation_test(a, b, clusters=(episodes, images)) == 2 / 4
    b_nan = b.copy()
    b_nan[7] = np.nan  # dropped before the clusters are summed: episode sums [4, 3]
    assert paired_permutation_test(a, b_nan, clusters=(episodes,)) == 2 / 4
    with pytest.raises(ValueError, match="one label per pair"):
        paired_permutation_test(a, b, clusters=([0, 1],))
