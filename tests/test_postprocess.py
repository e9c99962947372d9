"""One PostProcess for every consumer (issue 15, items 1 and 2).

The picture is the scored map: the array behind each overlay (report thumbnail at full size,
``auditor visualize``), compare's agreement inputs and the faithfulness maps are the very
array :func:`auditor.scoring.score_item` scored -- same function, same numbers, nothing decoded.
Baselines go through the same post-processing, and a map equal to the gaze beats them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from auditor import maps as maplib
from auditor import scoring
from auditor.data.annotations import Annotations
from auditor.maps import PostProcess

# a signed token map whose neighbours change sign: ReLU before or after upsampling differ here
RAW = np.array([[-1.0, 2.0, -0.5, 0.3], [0.8, -2.0, 1.5, -0.2], [0.1, 0.4, -1.2, 2.2]], np.float32)
SHAPE = (30, 44)  # under the report's 256 px thumbnail side: the thumbnail is the image's own size


def _scored(monkeypatch, raw: np.ndarray, mode: str, shape=SHAPE) -> np.ndarray:
    """The array score_item hands to the metrics for ``raw`` (captured, not recomputed)."""
    seen: list[np.ndarray] = []
    real = scoring.score_all
    monkeypatch.setattr(scoring, "score_all", lambda maps, ann, orders: seen.append(np.array(maps)) or real(maps, ann, orders))
    mask = np.zeros(shape, bool)
    mask[5:20, 10:30] = True
    scoring.score_item("img", shape, Annotations(mask=mask), {"m": torch.as_tensor(raw)}, {"m": mode}, None)
    monkeypatch.setattr(scoring, "score_all", real)
    return seen[0][0]  # the method's map comes first, then the baselines


def test_postprocess_records_and_round_trips_the_legacy_modes():
    assert PostProcess.from_mode("relu_minmax").to_dict() == {"relu": True, "upsample": "bilinear", "normalize": "minmax"}
    assert PostProcess.from_mode("minmax").to_dict() == {"relu": False, "upsample": "bilinear", "normalize": "minmax"}
    for mode in maplib.NORMALIZATIONS:
        assert PostProcess.from_mode(mode).mode == mode
    with pytest.raises(ValueError, match="normalisation must be one of"):
        PostProcess.from_mode("softmax")
    with pytest.raises(ValueError, match="normalize"):
        PostProcess(normalize="zscore")


def test_relu_comes_before_upsampling():
    # [[-1, 1]] to width 4 (align_corners=False samples at -0.25, 0.25, 0.75, 1.25 token units):
    # ReLU first -> [0, 1] -> 0, 0.25, 0.75, 1; upsampling first -> -1, -0.5, 0.5, 1 -> ReLU -> 0, 0, 0.5, 1
    raw = np.array([[-1.0, 1.0]])
    np.testing.assert_allclose(PostProcess(relu=True)(raw, (1, 4)), [[0.0, 0.25, 0.75, 1.0]])
    old = maplib.normalize(maplib.upsample(raw, (1, 4)), "relu_minmax")  # the report's former order
    np.testing.assert_allclose(old, [[0.0, 0.0, 0.5, 1.0]])


@pytest.mark.parametrize("mode", ["relu_minmax", "minmax"])
def test_report_overlay_draws_the_scored_map(monkeypatch, mode):
    from auditor.report import assets

    drawn: list[np.ndarray] = []
    monkeypatch.setattr(assets, "overlay", lambda thumb, heat, **kw: drawn.append(np.array(heat)) or thumb)
    pic = assets.Picture(np.zeros((*SHAPE, 3), np.uint8), SHAPE)
    assets.heat_overlay(pic, RAW, mode)
    scored = _scored(monkeypatch, RAW, mode)
    assert drawn[0].shape == scored.shape == SHAPE
    np.testing.assert_array_equal(drawn[0], scored)
    if mode == "relu_minmax":  # the former overlay (upsample, then ReLU) differs: this test can fail
        former = maplib.normalize(maplib.upsample(RAW, SHAPE), mode)
        assert np.abs(former - scored).max() > 0.1


def test_report_overlay_from_an_image_file_draws_the_scored_map(monkeypatch, tmp_path):
    from auditor.report import assets

    path = tmp_path / "im.png"
    Image.fromarray(np.full((*SHAPE, 3), 128, np.uint8)).save(path)
    pic = assets.load_picture(path)
    assert pic.thumb.shape[:2] == SHAPE
    np.testing.assert_array_equal(assets.heat_map(pic, RAW, "relu_minmax"), _scored(monkeypatch, RAW, "relu_minmax"))


def test_compare_agreement_compares_the_scored_maps(monkeypatch):
    from auditor.metrics import agreement
    from auditor.report.paired import map_agreement

    raw_b = np.roll(RAW, 1, axis=1)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = agreement.spearman
    monkeypatch.setattr(agreement, "spearman", lambda a, b: seen.append((np.array(a), np.array(b))) or real(a, b))
    out = map_agreement(RAW, raw_b, SHAPE, "relu_minmax", "minmax")
    monkeypatch.setattr(agreement, "spearman", real)
    np.testing.assert_array_equal(seen[0][0], _scored(monkeypatch, RAW, "relu_minmax"))
    np.testing.assert_array_equal(seen[0][1], _scored(monkeypatch, raw_b, "minmax"))
    assert out["spearman"] == pytest.approx(real(seen[0][0], seen[0][1]))


def test_faithfulness_maps_are_the_scored_maps(monkeypatch):
    from auditor.faithfulness._common import input_saliency
    from auditor.faithfulness.similarity import map_similarity
    from auditor.metrics.agreement import spearman

    scored = _scored(monkeypatch, RAW, "relu_minmax")
    np.testing.assert_array_equal(input_saliency(RAW[None], SHAPE, "relu_minmax")[0], scored)
    other = np.roll(RAW, 1, axis=0)
    sim = map_similarity(RAW, other, SHAPE, "relu_minmax")
    assert sim["spearman_normalised"] == pytest.approx(spearman(scored, _scored(monkeypatch, other, "relu_minmax")))


def test_visualize_draws_the_scored_map(monkeypatch, tmp_path):
    from auditor import render
    from auditor import visualize as vis

    path = tmp_path / "im.png"
    Image.fromarray((np.random.default_rng(0).random((*SHAPE, 3)) * 255).astype(np.uint8)).save(path)
    drawn: list[np.ndarray] = []
    real_overlay = render.overlay
    monkeypatch.setattr(render, "overlay", lambda image, heat, **kw: drawn.append(np.array(heat)) or real_overlay(
        image, heat, **kw))
    results = []
    real_compute = vis.compute_maps
    monkeypatch.setattr(vis, "compute_maps", lambda *a, **kw: results.append(real_compute(*a, **kw)) or results[-1])
    vis.visualize(path, arch="vit_small", patch_size=8, image_size=32, output_dir=tmp_path / "out", log=lambda s: None,
                  model_kwargs={"embed_dim": 48, "depth": 2, "num_heads": 3})
    res = results[0]
    for i, name in enumerate(["gradcam", "cls_attention"]):  # visualize draws them in this order
        mode = "relu_minmax" if name == "gradcam" else "minmax"
        np.testing.assert_array_equal(drawn[i], _scored(monkeypatch, res.maps[name].maps[0].numpy(), mode))


# ---------------------------------------------------------------- baselines as methods

def test_baselines_go_through_the_same_post_processing():
    from auditor.metrics import centre_gaussian, uniform_random

    base = scoring._baselines((24, 40), "img-7")
    for name, b in base.items():
        assert b.dtype == np.float32 and b.min() == 0.0 and b.max() == 1.0, name  # exact zeros, like a method's map
    c = centre_gaussian((24, 40))
    np.testing.assert_array_equal(base["centre"], PostProcess()(c, (24, 40)))
    assert c.min() > 0.02  # raw: no zero at all (the former bias: scored with a floor methods lack)
    np.testing.assert_array_equal(base["random"], PostProcess()(uniform_random((24, 40), seed=_crc("img-7")), (24, 40)))


def _crc(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode())


def test_a_map_equal_to_the_gaze_beats_both_baselines():
    # a gaze density (blurred fixations: Gaussian tails, no floor) off the image centre; the
    # method's raw map is the gaze itself; fixations at the densest pixels
    h, w = 48, 64
    r, c = np.mgrid[:h, :w]
    gaze = np.exp(-((r - 20) ** 2 + (c - 36) ** 2) / (2 * 8.0 ** 2))
    fix = np.zeros((h, w), bool)
    fix.flat[np.argsort(-gaze.ravel())[:30:3]] = True
    ann = Annotations(fixations=fix, gaze=gaze)
    metrics, status = scoring.score_item("img", (h, w), ann, {"m": torch.as_tensor(gaze)}, {"m": "minmax"}, None)
    assert status == {}
    for base in ("centre", "random"):
        for k in ("cc", "sim", "nss", "auc_judd"):
            assert metrics["m"][k] > metrics[base][k], (base, k)
        assert metrics["m"]["kl_div"] < metrics[base]["kl_div"], base
    assert metrics["m"]["cc"] == pytest.approx(1.0) and metrics["m"]["sim"] == pytest.approx(1.0)
    # values (this repository, numpy): centre CC 0.7927, KL 0.4264; random KL 1.3909
    assert metrics["centre"]["kl_div"] == pytest.approx(0.4264, abs=1e-4)


@pytest.mark.parametrize("value, text", [(1.0, "gradcam: hit"), (0.0, "gradcam: miss"),
                                         (0.5, "gradcam: 0.50 of the tied maxima hit")])
def test_report_badge_says_when_tied_maxima_split_the_pointing_game(value, text):
    from auditor.report.build import _card_text

    row = {"id": "x", "label_name": "cat", "target": None, "prediction": None,
           "metrics": {"gradcam": {"pointing_game": value}}}
    card = _card_text({"settings": {}}, row, "gradcam", ["pointing_game"], ["pointing_game"])
    assert [b["text"] for b in card["badges"]] == [text]
