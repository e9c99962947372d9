"""Faithfulness and sanity checks: known-answer models, outside reference values, the runner."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from auditor.faithfulness import (FaithfulnessOptions, cascade_layers, noisy_linear_impute, parse_checks,
                                  perturbation_curves, randomisation_cascade, road_curves)
from auditor.faithfulness import random_target as rt
from auditor.faithfulness._common import pixel_order, ranks
from auditor.errors import UsageError
from auditor.methods import compute_maps, create_method, registry
from auditor.methods.base import MapResult, Method, Recording
from auditor.metrics import HIGHER_IS_BETTER
from auditor.metrics.faithfulness import curve_auc, pixel_counts, removal_fractions
from auditor.results import schema_path
from auditor.runner import run_audit

from conftest import colour_vit, red_square_images
from reference_faithfulness_make import build_model, fixed_case
from test_run import _vit, write_square_set

REFERENCE = json.loads((Path(__file__).with_name("reference_faithfulness.json")).read_text())


class RegionModel(nn.Module):
    """Two classes; only the red of the top-left 8 x 8 region of a 32 px image decides them:
    logit_0 = 12 (mean red there - 0.5), logit_1 = 0."""

    num_classes = 2

    def forward(self, x):
        red = x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([12 * (red - 0.5), torch.zeros_like(red)], 1)


def region_images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.5
    x[:, 0, :8, :8] = 1.0
    return x


class EdgeMap(Method):
    """Test-only "method": the Sobel edge magnitude of the input image; ignores the model."""

    name = "edge_map"

    def compute(self, rec: Recording) -> MapResult:
        grey = rec.inputs.detach().mean(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
        gx, gy = F.conv2d(grey, kx, padding=1), F.conv2d(grey, kx.transpose(-1, -2), padding=1)
        return MapResult(self.name, (gx ** 2 + gy ** 2).sqrt()[:, 0])


# ----------------------------------------------------------------------------- curve maths


def test_curve_auc_is_the_trapezoid_over_fractions():
    assert removal_fractions(4).tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert curve_auc(np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)  # (1 + 2*.5 + 0) / 2 / 2
    assert curve_auc(np.array([1.0, 1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.375)
    assert np.isnan(curve_auc(np.array([1.0, np.nan])))
    assert pixel_counts(removal_fractions(8), 256).tolist() == [0, 32, 64, 96, 128, 160, 192, 224, 256]
    with pytest.raises(ValueError):
        curve_auc(np.array([1.0]))


# ----------------------------------------------------------------------------- known-answer model


def test_deletion_by_the_true_saliency_beats_a_random_order():
    model, x = RegionModel(), region_images()
    res = compute_maps(model, x, [create_method("input_gradient")], target=[0] * len(x))
    sal = res.maps["input_gradient"].maps.numpy()  # non-zero only in the deciding region
    assert sal[:, 8:, :].max() == 0 and sal[:, :8, :8].min() > 0
    rand = np.random.default_rng(0).random(sal.shape)
    kw = dict(steps=16, baseline="zero")
    auc = {(mode, name): np.mean([curve_auc(c) for c in perturbation_curves(model, x, s, [0] * len(x), mode=mode, **kw)])
           for mode in ("deletion", "insertion") for name, s in (("true", sal), ("random", rand))}
    assert auc["deletion", "true"] < auc["deletion", "random"] - 0.3, auc
    assert auc["insertion", "true"] > auc["insertion", "random"] + 0.3, auc


def test_batching_does_not_change_the_curves():
    model, x = RegionModel(), region_images(3)
    sal = np.random.default_rng(1).random((3, 32, 32))
    a = perturbation_curves(model, x, sal, [0, 0, 0], steps=5, baseline="blur", forward_batch=1)
    b = perturbation_curves(model, x, sal, [0, 0, 0], steps=5, baseline="blur", forward_batch=64)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.shape == (3, 6)


# ----------------------------------------------------------------------------- outside reference values


def test_deletion_insertion_match_rise_and_quantus():
    ref = REFERENCE
    model, (x, sal) = build_model(), fixed_case()
    c, steps = ref["case"]["target"], ref["case"]["steps"]
    dele = perturbation_curves(model, x, sal, [c], mode="deletion", steps=steps, baseline="zero")[0]
    ins = perturbation_curves(model, x, sal, [c], mode="insertion", steps=steps, baseline="blur")[0]
    np.testing.assert_allclose(dele, ref["rise"]["deletion_zero"], atol=1e-5)
    np.testing.assert_allclose(ins, ref["rise"]["insertion_blur"], atol=1e-5)
    assert curve_auc(dele) == pytest.approx(ref["rise"]["deletion_zero_auc"], abs=1e-5)
    assert curve_auc(ins) == pytest.approx(ref["rise"]["insertion_blur_auc"], abs=1e-5)
    # Quantus PixelFlipping: the same curve without the unperturbed point (its AUC uses dx = 1)
    np.testing.assert_allclose(dele[1:], ref["quantus_pixel_flipping"]["curve"], atol=1e-5)


def test_road_matches_pytorch_grad_cam_noisy_linear_imputer():
    ref = REFERENCE["road_pytorch_grad_cam"]
    model, (x, sal) = build_model(), fixed_case()
    c, steps = REFERENCE["case"]["target"], REFERENCE["case"]["steps"]
    for order in ("morf", "lerf"):
        probs = road_curves(model, x, sal, [c], order=order, steps=steps, noise=0.0)[0]
        np.testing.assert_allclose(probs, [v["probability"] for v in ref[order]], atol=1e-5)
        s = sal[0] if order == "morf" else -sal[0]
        rank = ranks(pixel_order(s)).reshape(16, 16)
        for v in ref[order]:
            n = int(round(v["fraction"] * 256))
            assert n == v["removed"]
            out = noisy_linear_impute(x[0].numpy(), rank >= n, noise=0.0)
            assert out.sum() == pytest.approx(v["imputed_sum"], abs=1e-3)


def test_noisy_linear_imputation_is_the_neighbour_mean():
    img = np.zeros((1, 3, 3))
    img[0] = [[1, 2, 3], [4, 0, 6], [7, 8, 9]]
    keep = np.ones((3, 3), bool)
    keep[1, 1] = False
    out = noisy_linear_impute(img, keep, noise=0.0)
    # 1/6 (2 + 4 + 6 + 8) + 1/12 (1 + 3 + 7 + 9) = 20/6 + 20/12 = 5
    assert out[0, 1, 1] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="nothing to impute"):
        noisy_linear_impute(img, np.zeros((3, 3), bool))


# ----------------------------------------------------------------------------- sanity checks


def test_randomisation_flags_an_edge_detector_but_not_gradcam(monkeypatch):
    monkeypatch.setitem(registry._METHODS, "edge_map", EdgeMap)  # test-only, removed after the test
    model = colour_vit()
    x, _ = red_square_images(6)
    methods = [create_method("gradcam"), create_method("edge_map")]
    res = compute_maps(model, x, methods, target=[0] * 6)
    assert cascade_layers(model, x[:1]) == ["head", "norm", "blocks.0", "cls_token,pos_embed", "patch_embed"]
    out = randomisation_cascade(model, x, methods, {m: r.maps for m, r in res.maps.items()}, res.targets)
    final = {m: np.nanmean(s["spearman"][-1]) for m, s in out["similarity"].items()}
    assert final["edge_map"] > 0.99  # identical maps whatever the weights: flagged
    assert final["gradcam"] < 0.5, final  # Grad-CAM genuinely changes
    assert np.nanmean(out["similarity"]["gradcam"]["ssim"][-1]) < 0.5
    # the trained model itself is untouched (the cascade runs on a deep copy)
    again = compute_maps(model, x, [create_method("gradcam")], target=[0] * 6)
    torch.testing.assert_close(again.maps["gradcam"].maps, res.maps["gradcam"].maps)


def test_random_target_flags_a_class_insensitive_method():
    model = colour_vit()
    x, _ = red_square_images(6)
    methods = [create_method("gradcam"), EdgeMap()]
    res = compute_maps(model, x, methods, target=[0] * 6)
    out = rt.random_target(model, x, methods, {m: r.maps for m, r in res.maps.items()}, res.targets, num_classes=3)
    assert all(t != 0 for t in out["targets"])
    assert np.nanmean(out["similarity"]["edge_map"]["spearman_normalised"]) > 0.99
    assert np.nanmean(out["similarity"]["gradcam"]["spearman_normalised"]) < 0.5


# ----------------------------------------------------------------------------- runner, schema, options


def test_options_are_validated():
    assert parse_checks("deletion, road") == ["deletion", "road"]
    assert len(parse_checks("all")) == 5
    with pytest.raises(UsageError, match="randomisation"):
        parse_checks("delete")
    with pytest.raises(UsageError, match="baseline"):
        FaithfulnessOptions(["deletion"], baseline="grey")
    for name in ("deletion_auc", "road_morf", "randomisation_spearman", "random_target_spearman"):
        assert HIGHER_IS_BETTER[name] is False
    assert HIGHER_IS_BETTER["insertion_auc"] and HIGHER_IS_BETTER["road_lerf"]


def test_run_audit_with_every_check(tmp_path):
    data = write_square_set(tmp_path / "data", n=6)
    res = run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam", "input_gradient"],
                    faithfulness="deletion,insertion,road,randomisation,random_target", faithfulness_steps=4,
                    faithfulness_baseline="mean", report=True,
                    fail_under=["gradcam.insertion_auc=0.0", "gradcam.deletion_vs_random=-1.0"])
    d = json.loads((tmp_path / "o" / "results.json").read_text())
    jsonschema.validate(d, json.loads(schema_path().read_text()))
    gate = {(v["method"], v["metric"]): v for v in d["verdicts"]}
    assert gate["gradcam", "deletion_vs_random"]["passed"] and d["passed"]  # a higher-is-better minimum
    g = res.summary["gradcam"]
    for k in ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "randomisation_spearman",
              "randomisation_ssim", "random_target_spearman"):
        assert g[k].n == 6, k
    assert g["deletion_auc"].mean < g["insertion_auc"].mean
    for k in ("deletion_auc_normalised", "insertion_auc_normalised", "deletion_vs_random", "insertion_vs_random"):
        assert g[k].n == 6, k
    row = next(r for r in d["rows"] if not r["error"])
    assert "deletion_auc" in row["metrics"]["gradcam"] and "deletion_auc" not in row["metrics"]["centre"]
    assert "deletion_vs_random" in row["metrics"]["gradcam"]
    f = d["faithfulness"]
    assert len(f["curves"]["gradcam"]["deletion"]["mean"]) == 5
    # normalised by the unperturbed image: deletion starts at 1, insertion ends at 1; the random order too
    for curves in (f["curves"]["gradcam"], f["random_order"]):
        assert curves["deletion_normalised"]["mean"][0] == pytest.approx(1.0)
        assert curves["insertion_normalised"]["mean"][-1] == pytest.approx(1.0)
    assert f["random_order"]["deletion"]["n"] == 6 and len(f["random_order"]["insertion"]["fractions"]) == 5
    # the score is the area between the random and saliency curves (linear: the mean of it is that of the means)
    assert g["deletion_vs_random"].mean == pytest.approx(
        curve_auc(np.array(f["random_order"]["deletion_normalised"]["mean"]))
        - curve_auc(np.array(f["curves"]["gradcam"]["deletion_normalised"]["mean"])), abs=1e-9)
    assert f["randomisation"]["gradcam"]["layers"][0] == "head"
    assert f["randomisation"]["gradcam"]["weight_independent"] is False
    assert d["settings"]["faithfulness"]["steps"] == 4 and d["settings"]["faithfulness"]["baseline"] == "mean"
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Faithfulness" in html and "dashed: random pixel order" in html


def test_run_audit_without_faithfulness_has_no_section(tmp_path):
    data = write_square_set(tmp_path / "data", n=3)
    res = run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam"])
    assert "faithfulness" not in res.data and "deletion_auc" not in res.summary["gradcam"]


def test_report_badges_a_weight_independent_method_and_cli_states_the_cost(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._METHODS, "edge_map", EdgeMap)
    data = write_square_set(tmp_path / "data", n=3)
    res = run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam", "edge_map"],
                    faithfulness=["randomisation"], report=True,
                    thresholds=None, fail_under=[], max_drop=[])
    section = res.data["faithfulness"]["randomisation"]
    assert section["edge_map"]["weight_independent"] is True and section["gradcam"]["weight_independent"] is False
    html = (tmp_path / "o" / "report.html").read_text()
    assert "edge_map: does not depend on the weights" in html and "gradcam: does not" not in html

    from click.testing import CliRunner
    from auditor.cli import main

    r = CliRunner().invoke(main, ["run", "--help"])
    text = " ".join(r.output.split())
    assert "steps+1 each for the random-order reference" in text and "ViT: depth+4" in text
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--arch", "vit_tiny", "--out", str(tmp_path / "x"),
                                  "--faithfulness", "deletion,nope"])
    assert r.exit_code == 2 and "nope" in r.output and "Traceback" not in r.output
