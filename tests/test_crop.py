"""A centre crop (--resize crop): where the model looked, how maps cover the image, how metrics
treat what it never saw, and which preprocessing a model gets."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from auditor import maps as maplib
from auditor.errors import UsageError
from auditor.identity import differences
from auditor.preprocess import Preprocess, from_hf_processor, model_preprocess
from auditor.render import crop_frame
from auditor.scoring import score_item

from conftest import colour_vit

CROP = Preprocess(size=(224, 224), resize="crop", resampler="pil", scale_size=(256, 256), crop_pct=0.875)


# ---------------------------------------------------------------- geometry

def test_region_of_a_landscape_image_by_hand():
    """300 x 400 (H x W): short side 300 -> 256, long int(256 * 400 / 300) = 341; margins 32 and 117:
    top round(16.0) = 16, left round(58.5) = 58 (half to even)."""
    assert CROP.resized_shape((300, 400)) == (256, 341)
    assert CROP.region((300, 400)) == (58 / 341, 16 / 256, 282 / 341, 240 / 256)
    x0, y0, x1, y1 = CROP.crop_box((300, 400))
    assert (x0, y0, x1, y1) == pytest.approx((58 / 341 * 400, 16 / 256 * 300, 282 / 341 * 400, 240 / 256 * 300))
    assert Preprocess().region((300, 400)) is None  # squash: the whole image


def test_crop_pct_recorded_with_the_crop_and_only_then():
    d = CROP.to_dict()
    assert d["resize"] == "crop" and d["scale_size"] == [256, 256] and d["crop_pct"] == 0.875
    assert {"scale_size", "crop_pct", "crop_mode"}.isdisjoint(Preprocess().to_dict())
    assert Preprocess.from_dict(d) == CROP
    assert Preprocess.from_dict({"size": [224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}).resize == "squash"


# ---------------------------------------------------------------- maps over the whole image

def test_whole_image_region_equals_the_interpolate_path():
    raw = torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(raw[:, None], size=(33, 20), mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(maplib.upsample(raw, (33, 20), (0.0, 0.0, 1.0, 1.0)), ref, atol=1e-6)


def test_a_crop_map_covers_the_crop_and_is_its_minimum_outside():
    """A 2 x 2 map over the middle half of an 4 x 8 image: columns 2..5 are the map upsampled to
    4 x 4, columns 0, 1, 6, 7 take its lowest value (1); after min-max they are 0."""
    raw = np.array([[1.0, 2.0], [3.0, 4.0]])
    up = maplib.upsample(raw, (4, 8), (0.25, 0.0, 0.75, 1.0))
    inner = F.interpolate(torch.tensor(raw)[None, None], size=(4, 4), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(up[:, 2:6], inner.numpy(), atol=1e-6)
    assert (up[:, [0, 1, 6, 7]] == 1.0).all()
    shown = maplib.PostProcess()(raw, (4, 8), (0.25, 0.0, 0.75, 1.0))
    assert (shown[:, [0, 1, 6, 7]] == 0).all() and shown.max() == 1.0
    assert maplib.region_mask((4, 8), (0.25, 0.0, 0.75, 1.0))[0].tolist() == [False] * 2 + [True] * 4 + [False] * 2


def _ann(mask=None, fixations=None):
    return SimpleNamespace(mask=mask, fixations=fixations, gaze=None)


def test_a_box_wholly_outside_the_crop_is_nan_with_the_reason_not_a_miss():
    region = (0.25, 0.0, 0.75, 1.0)  # the model saw columns 16..47 of 64
    mask = np.zeros((32, 64), bool)
    mask[10:20, 2:12] = True  # left of the crop
    metrics, status = score_item("a", (32, 64), _ann(mask), {"m": torch.rand(4, 4)}, {"m": "minmax"}, None,
                                 region=region)
    assert all(np.isnan(v) for v in metrics["m"].values())
    assert "wholly outside the model's centre crop" in status["m"] and "pointing_game" in status["m"]
    assert np.isfinite(metrics["centre"]["pointing_game"])  # the baselines cover the whole image


def test_a_box_half_outside_the_crop_is_scored_with_no_evidence_outside():
    """The map peaks at the crop's left column; the box spans columns 8..23 of which 16..23 are
    inside: the hit counts, and relevance mass = the box's share of the map (0 outside)."""
    region = (0.25, 0.0, 0.75, 1.0)
    raw = torch.zeros(4, 4)
    raw[:, 0] = 1.0
    mask = np.zeros((32, 64), bool)
    mask[:, 8:24] = True
    metrics, status = score_item("a", (32, 64), _ann(mask), {"m": raw}, {"m": "minmax"}, None, region=region)
    assert status == {} and metrics["m"]["pointing_game"] == 1.0
    sal = maplib.PostProcess()(raw.numpy(), (32, 64), region)
    assert sal[:, :16].sum() == 0 and metrics["m"]["relevance_mass"] == pytest.approx(sal[mask].sum() / sal.sum())


# ---------------------------------------------------------------- which preprocessing a model gets

class _Model:
    def __init__(self, **cfg):
        self.default_cfg = cfg


def test_model_without_a_data_config_is_squashed_in_torch_as_before():
    pre = model_preprocess(_Model(input_size=(3, 32, 48), mean=(0, 0, 0), std=(1, 1, 1)))
    assert (pre.size, pre.resize, pre.resampler, pre.mean) == ((32, 48), "squash", "torch", (0, 0, 0))
    crop = model_preprocess(_Model(input_size=(3, 32, 32)), resize="crop")
    assert (crop.resize, crop.scale_size, crop.resampler) == ("crop", (36, 36), "pil")  # floor(32 / 0.875)


def test_timm_config_crops_unless_squash_is_asked():
    m = _Model(input_size=(3, 224, 224), crop_pct=0.9, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3)
    auto = model_preprocess(m)
    assert (auto.resize, auto.scale_size, auto.interpolation, auto.source) == ("crop", (248, 248), "bilinear",
                                                                               "timm pretrained_cfg")
    squash = model_preprocess(m, resize="squash")
    assert (squash.resize, squash.interpolation, squash.resampler, squash.mean) == ("squash", "bilinear", "pil",
                                                                                     (0.5,) * 3)
    assert model_preprocess(m, 112).scale_size == (124, 124)  # --image-size keeps crop_pct: floor(112 / 0.9)
    with pytest.raises(UsageError, match="border"):
        model_preprocess(_Model(crop_pct=1.0, crop_mode="border"))


def test_hf_processor_config_dinov2_and_vit():
    dino = {"do_resize": True, "size": {"shortest_edge": 256}, "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224}, "resample": 3, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225]}
    pre = model_preprocess(_Model(input_size=(3, 518, 518), image_processor=dino))
    assert (pre.size, pre.scale_size, pre.crop_offset, pre.interpolation) == ((224, 224), (256, 256), "floor", "bicubic")
    vit = from_hf_processor({"size": {"height": 224, "width": 224}, "resample": 2, "image_mean": [0.5] * 3,
                             "image_std": [0.5] * 3})
    assert (vit.resize, vit.interpolation, vit.resampler) == ("squash", "bilinear", "pil")
    with pytest.raises(UsageError, match="rescales"):
        from_hf_processor({"size": {"height": 8, "width": 8}, "do_rescale": False})


def test_identity_reads_old_results_as_squash_and_names_a_crop():
    old = {"settings": {"preprocessing": {"size": [32, 32], "mean": [0, 0, 0], "std": [1, 1, 1],
                                          "interpolation": "bicubic"}}}
    new = {"settings": {"preprocessing": Preprocess(size=(32, 32), mean=(0, 0, 0), std=(1, 1, 1)).to_dict()}}
    assert differences(old, new) == []
    crop = {"settings": {"preprocessing": model_preprocess(_Model(input_size=(3, 32, 32), mean=(0, 0, 0),
                                                                  std=(1, 1, 1)), resize="crop").to_dict()}}
    (diff,) = differences(new, crop)
    assert "resize: squash vs crop" in diff and "source" not in diff


# ---------------------------------------------------------------- drawing

def test_crop_frame_draws_a_black_and_white_line_on_the_crop_edge():
    img = np.full((40, 80, 3), 128, np.uint8)
    out = crop_frame(img, (0.25, 0.0, 0.75, 1.0))
    assert (out[20, 20] == 255).all() and (out[20, 21] == 0).all()  # left edge at column 20: white, then black
    assert (out[20, 10] == 128).all() and (out[20, 40] == 128).all()
    assert crop_frame(img, None) is img


# ---------------------------------------------------------------- a whole audit with a crop

def test_audit_with_crop_records_it_and_refuses_to_score_an_object_it_never_saw(tmp_path):
    from auditor.runner import run_audit

    rng = np.random.default_rng(0)
    lines = [json.dumps({"classes": ["red", "green", "blue"]})]
    for name, x0 in (("left", 0), ("centre", 24)):  # 32 x 64: the crop sees columns ~18..46
        img = np.repeat((rng.random((32, 64, 1)) * 100).astype(np.uint8), 3, axis=2)
        img[8:24, x0:x0 + 16] = (255, 0, 0)
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        lines.append(json.dumps({"image": f"{name}.png", "label": "red", "boxes": [[x0, 8, x0 + 16, 24]]}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    model = colour_vit()
    model.default_cfg = {"input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)}
    res = run_audit(tmp_path / "m.jsonl", out=tmp_path / "o", model=model, methods=["gradcam"], resize="crop",
                    report=True)
    pre = res.data["settings"]["preprocessing"]
    assert (pre["resize"], pre["scale_size"], pre["crop_pct"]) == ("crop", [36, 36], 0.875)
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in res.rows}
    left, centre = rows["left.png"], rows["centre.png"]
    assert left["metrics"]["gradcam"]["pointing_game"] is None  # NaN in results
    assert "outside the model's centre crop" in left["map_status"]["gradcam"]
    assert centre["metrics"]["gradcam"]["pointing_game"] == 1.0
    assert "resize to cover 36x36, centre crop 32x32 (crop_pct 0.875" in (tmp_path / "o" / "report.html").read_text()


def test_report_overlay_places_the_map_in_the_crop_and_frames_it():
    from auditor.report.assets import Picture, heat_overlay

    pic = Picture(np.full((40, 80, 3), 128, np.uint8), (400, 800))
    token = np.arange(16, dtype=np.float32).reshape(4, 4)
    region = (0.25, 0.0, 0.75, 1.0)
    out = heat_overlay(pic, token, "minmax", cmap="gray", alpha=1.0, region=region)
    assert (out[20, 20] == 255).all() and (out[20, 21] == 0).all()  # the frame
    assert (out[5:35, 5] == 0).all()  # outside the crop: the map's 0 (gray colour map, opaque)
    grid = heat_overlay(pic, token, "minmax", cmap="gray", alpha=1.0, style="grid", region=region)
    assert (grid[5:35, 5] == 128).all()  # the patch grid covers the crop only


def test_results_with_a_crop_match_the_schema():
    import jsonschema

    from auditor.results import schema_path

    schema = json.loads(schema_path().read_text())["properties"]["settings"]["properties"]["preprocessing"]
    jsonschema.validate(CROP.to_dict(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**CROP.to_dict(), "crop_offset": "ceil"}, schema)


def test_hf_folder_with_dinov2s_processor_config_is_cropped_as_hf_does(tmp_path):
    pytest.importorskip("transformers")
    import shutil

    from auditor.models import build_model

    folder = tmp_path / "dino"
    shutil.copytree(Path(__file__).parent / "data" / "hf_dinov2", folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225]}))
    model = build_model(None, factory=f"hf:{folder}").model
    pre = model_preprocess(model)
    assert (pre.resize, pre.size, pre.scale_size, pre.crop_offset, pre.source) == (
        "crop", (224, 224), (256, 256), "floor", "preprocessor_config.json")
    assert model_preprocess(model, resize="squash").resize == "squash"
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**cfg, "size": {"longest_edge": 300},
                                                                 "do_center_crop": False}))
    odd = build_model(None, factory=f"hf:{folder}").model
    with pytest.raises(UsageError, match="--resize squash"):
        model_preprocess(odd)
    assert model_preprocess(odd, resize="squash").mean == (0.485, 0.456, 0.406)
