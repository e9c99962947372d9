"""Deletion / insertion normalised by the unperturbed score and compared with a random pixel order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from auditor.faithfulness import (BatchChecks, deletion_insertion, load_part, perturbation_curves, random_order_curves,
                                  random_order_saliency, save_part)
from auditor.metrics.faithfulness import area_above_random, curve_scores, normalised_curve
from auditor.methods import compute_maps, create_method

from test_faithfulness import RegionModel, region_images


class Tempered(nn.Module):
    """The same model with its logits divided by ``temperature``: the same ranking of pixels, less confident."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x):
        return self.model(x) / self.temperature


def _scores(model, x, sal, target, mode, steps=16, baseline="zero"):
    """Per image: raw AUC, normalised AUC, and the area above the random order."""
    targets = [target] * len(x)
    c = perturbation_curves(model, x, sal, targets, mode=mode, steps=steps, baseline=baseline)
    r = random_order_curves(model, x, targets, mode=mode, steps=steps, baseline=baseline)
    s = curve_scores(c, r, mode)
    return s[f"{mode}_auc"], s[f"{mode}_auc_normalised"], s[f"{mode}_vs_random"]


def _true_map(model, x):
    res = compute_maps(model, x, [create_method("input_gradient")], target=[0] * len(x))
    return res.maps["input_gradient"].maps.numpy()  # non-zero only in the deciding top-left region


# ----------------------------------------------------------------------------- curve maths


def test_normalised_curve_and_area_above_random_by_hand():
    np.testing.assert_allclose(normalised_curve(np.array([0.8, 0.4, 0.0]), "deletion"), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(normalised_curve(np.array([[0.1, 0.2, 0.4]]), "insertion"), [[0.25, 0.5, 1.0]])
    np.testing.assert_allclose(normalised_curve(np.array([0.5, 0.75, 0.25]), "deletion"), [1.0, 1.5, 0.5])  # may pass 1
    assert np.isnan(normalised_curve(np.array([0.0, 0.1, 0.0]), "deletion")).all()  # nothing to divide by
    # deletion: auc(random) - auc(map) = 0.5 - 0.25; insertion: auc(map) - auc(random)
    assert area_above_random(np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.5, 0.0]), "deletion") == pytest.approx(0.25)
    assert area_above_random(np.array([0.0, 1.0, 1.0]), np.array([0.0, 0.5, 1.0]), "insertion") == pytest.approx(0.25)
    assert area_above_random(np.array([1.0, 0.5, 0.0]), np.array([1.0, 0.5, 0.0]), "deletion") == 0.0
    assert np.isnan(area_above_random(np.array([np.nan, 0.0]), np.array([1.0, 0.0]), "deletion"))
    with pytest.raises(ValueError, match="mode"):
        normalised_curve(np.array([1.0, 0.0]), "removal")
    s = curve_scores(np.array([[0.8, 0.0, 0.0]]), np.array([[0.8, 0.4, 0.0]]), "deletion")
    np.testing.assert_allclose(s["deletion_normalised"], [[1.0, 0.0, 0.0]])
    assert (s["deletion_auc"][0], s["deletion_auc_normalised"][0], s["deletion_vs_random"][0]) == pytest.approx(
        (0.2, 0.25, 0.25))  # raw 0.8 / 4; normalised 1 / 4; random normalised 0.5 - 0.25


def test_random_order_is_seeded_and_the_same_for_every_image_and_batch():
    a = random_order_saliency((4, 5), seed=0)
    assert sorted(a.ravel().tolist()) == list(range(20))  # a permutation: no ties
    np.testing.assert_array_equal(a, random_order_saliency((4, 5), seed=0))
    assert not np.array_equal(a, random_order_saliency((4, 5), seed=1))
    model, x = RegionModel(), region_images(3)
    whole = random_order_curves(model, x, [0, 0, 0], steps=4, baseline="blur")
    alone = random_order_curves(model, x[1:2], [0], steps=4, baseline="blur")
    np.testing.assert_array_equal(whole[1], alone[0])


# ----------------------------------------------------------------------------- what the scores mean


class TenClasses(RegionModel):
    """:class:`RegionModel` with eight more classes of logit 0: a flatter softmax at high temperature."""

    num_classes = 10

    def forward(self, x):
        two = super().forward(x)
        return torch.cat([two, torch.zeros(len(x), 8)], 1)


def test_a_less_confident_model_does_not_improve_deletion():
    x = region_images(6)
    model, unsure_model = TenClasses(), Tempered(TenClasses(), 4.0)
    true, rand = _true_map(model, x), np.random.default_rng(5).random((6, 32, 32))
    for name, sal in (("true", true), ("random", rand)):
        sure, unsure = _scores(model, x, sal, 0, "deletion"), _scores(unsure_model, x, sal, 0, "deletion")
        if name == "random":  # the raw area "improves" (lower is better): the flaw the normalisation removes
            assert unsure[0].mean() < sure[0].mean() - 0.1, (sure[0].mean(), unsure[0].mean())
        # normalised, the unsure model's curve stays nearer 1: a larger area, not a better one
        assert (unsure[1] >= sure[1]).all(), (name, sure[1], unsure[1])
    for mode in ("deletion", "insertion"):  # against the random order: not better, per image, both curves
        s, u = _scores(model, x, true, 0, mode), _scores(unsure_model, x, true, 0, mode)
        assert (u[2] <= s[2]).all(), (mode, s[2], u[2])


def test_the_true_map_beats_a_random_order_and_a_random_map_scores_about_zero():
    x = region_images(8)
    model = RegionModel()
    true, rand = _true_map(model, x), np.random.default_rng(7).random((8, 32, 32))
    for mode in ("deletion", "insertion"):
        assert _scores(model, x, true, 0, mode)[2].min() > 0.3, mode
        got = _scores(model, x, rand, 0, mode)[2]
        assert abs(got.mean()) < 0.05, (mode, got)


def test_a_misclassified_image_no_longer_scores_well_whatever_the_map():
    """Red 0.3 in the deciding region: class 0 (the target) has probability 0.083, the image is
    misclassified. Any map then has a raw deletion area near 0 ("excellent"); against the random
    order the true map scores well and a random map about 0."""
    x = region_images(6)
    x[:, 0, :8, :8] = 0.3
    model = RegionModel()
    true, rand = _true_map(model, x), np.random.default_rng(3).random((6, 32, 32))
    raw_true, _, vs_true = _scores(model, x, true, 0, "deletion")
    raw_rand, _, vs_rand = _scores(model, x, rand, 0, "deletion")
    assert raw_true.max() < 0.1 and raw_rand.max() < 0.1, (raw_true, raw_rand)
    assert vs_true.min() > 0.15, vs_true  # 0.199
    assert abs(vs_rand.mean()) < 0.05, vs_rand


def test_deletion_insertion_gives_both_orders_and_their_scores():
    model, x = RegionModel(), region_images(2)
    sal = _true_map(model, x)
    out = deletion_insertion(model, x, sal, [0, 0], steps=4, baseline="zero")
    for mode in ("deletion", "insertion"):
        np.testing.assert_array_equal(out[f"random_{mode}"], random_order_curves(model, x, [0, 0], mode=mode, steps=4,
                                                                                 baseline="zero"))
        assert out[f"{mode}_vs_random"].shape == (2,) and (out[f"{mode}_vs_random"] > 0.3).all()
    np.testing.assert_allclose(out["deletion_normalised"][:, 0], 1.0)
    np.testing.assert_allclose(out["insertion_normalised"][:, -1], 1.0)


def test_parts_keep_the_random_order_reference(tmp_path):
    ref = {"deletion": np.array([[0.5, 0.25]]), "deletion_normalised": np.array([[1.0, 0.5]])}
    save_part(BatchChecks(metrics=[{}], reference=ref), tmp_path / "p.npz")
    back = load_part(tmp_path / "p.npz")
    assert set(back.reference) == set(ref)
    np.testing.assert_array_equal(back.reference["deletion_normalised"], ref["deletion_normalised"])


def test_tempered_wrapper_keeps_the_ranking():
    x = region_images(2)
    a, b = RegionModel()(x), Tempered(RegionModel(), 4.0)(x)
    torch.testing.assert_close(b * 4.0, a)
