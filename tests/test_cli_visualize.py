"""`auditor visualize`: the original guide's command, outputs, log and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.models import create_model


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


@pytest.fixture
def headless_ckpt(tmp_path):
    """A headless ViT-S/16 checkpoint in the seed's format (4 blocks to keep the test fast)."""
    torch.manual_seed(0)
    model = create_model("vit_small", depth=4)
    path = tmp_path / "checkpoint.pth"
    torch.save({"params": model.state_dict(), "val_acc": np.float64(0.7), "epoch": 9}, path)
    return path


def test_seed_command_writes_three_pngs_at_the_photo_size(chelsea_png, headless_ckpt, tmp_path):
    out = tmp_path / "attention_viz"
    r = invoke("visualize", "--image_path", chelsea_png, "--model_path", headless_ckpt, "--arch", "vit_small",
               "--patch_size", 16, "--image_size", 224, "--output_dir", out, "--depth", 4)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "[1/4] Loading image: chelsea.png"
    assert "   Image size: (451, 300)" in lines
    assert "[2/4] Loading model: vit_small" in lines
    assert f"   Loading checkpoint: {headless_ckpt}" in lines
    assert "[3/4] Computing Grad-CAM..." in lines
    assert "norm of the CLS output" in r.output
    assert lines[-1] == "[4/4] Visualization complete!"
    for name in ("gradcam_overlay.png", "patch_attention_overlay.png", "patch_grid.png"):
        assert f"Saved: {out / name}" in r.output
        with Image.open(out / name) as im:  # the photo at its size, a title above, a colour bar below
            assert im.size[0] == 451 and im.size[1] > 300


def test_save_maps_holds_float32_maps_at_image_resolution(chelsea_png, tmp_path):
    out = tmp_path / "o"
    r = invoke("visualize", "--image-path", chelsea_png, "--arch", "vit_tiny", "--depth", 2, "--output-dir", out,
               "--save-maps")
    assert r.exit_code == 0, r.output
    with np.load(out / "maps.npz") as z:
        assert sorted(z.files) == ["cls_attention/chelsea", "gradcam/chelsea"]
        assert z["gradcam/chelsea"].shape == (300, 451) and z["gradcam/chelsea"].dtype == np.float32
        assert z["gradcam/chelsea"].min() < 0  # raw, before display normalisation


def test_unknown_arch_exits_2_with_the_list_and_no_traceback(chelsea_png, tmp_path):
    r = CliRunner().invoke(main, ["visualize", "--image_path", str(chelsea_png), "--arch", "vit_huge_xl"])
    assert r.exit_code == 2
    assert "Cannot find model 'vit_huge_xl'" in r.output and "vit_small" in r.output
    assert "Traceback" not in r.output


def test_missing_checkpoint_exits_2(chelsea_png, tmp_path):
    r = CliRunner().invoke(main, ["visualize", "--image_path", str(chelsea_png), "--model_path", "nope.pth"])
    assert r.exit_code == 2
    assert "Checkpoint not found: 'nope.pth'" in r.output and "Traceback" not in r.output


def test_missing_image_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["visualize", "--image_path", str(tmp_path / "cat.jpg")])
    assert r.exit_code == 2 and "Image not found" in r.output and "Traceback" not in r.output


def test_bad_image_size_is_a_usage_error(chelsea_png):
    r = CliRunner().invoke(main, ["visualize", "--image_path", str(chelsea_png), "--image_size", "big"])
    assert r.exit_code == 2 and "is not a size" in r.output


def test_user_models_package_arch(chelsea_png, tmp_path, monkeypatch):
    pkg = tmp_path / "proj" / "models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from auditor.models.vit import VisionTransformer\n"
        "def my_net(patch_size=16, num_classes=0, **kw):\n"
        "    return VisionTransformer(img_size=64, patch_size=patch_size, num_classes=num_classes,\n"
        "                             embed_dim=32, depth=2, num_heads=2)\n"
    )
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.delitem(__import__("sys").modules, "models", raising=False)
    r = invoke("visualize", "--image_path", chelsea_png, "--arch", "my_net", "--output_dir", "viz")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "proj" / "viz" / "patch_grid.png").is_file()


def test_cnn_via_factory_skips_patch_attention_with_a_reason(chelsea_png, tmp_path, monkeypatch):
    (tmp_path / "cnn.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))\n"
    )
    monkeypatch.chdir(tmp_path)
    r = invoke("visualize", "--image_path", chelsea_png, "--model", "cnn:build", "--output_dir", "viz")
    assert r.exit_code == 0, r.output
    assert "cls_attention: not applicable" in r.output
    assert (tmp_path / "viz" / "gradcam_overlay.png").is_file()
    assert not (tmp_path / "viz" / "patch_grid.png").exists()


def test_pngs_are_titled_with_a_colour_bar_and_the_photo_unchanged_inside(chelsea_png, tmp_path):
    """Each PNG: a title band, the overlay at the photo's size, a jet colour bar (low blue, high
    red); patch_grid.png adds a legend for its frames and uses the overlays' colours."""
    from auditor import render

    out = tmp_path / "o"
    r = invoke("visualize", "--image-path", chelsea_png, "--checkpoint", "demo:clean", "--out", out)
    assert r.exit_code == 0, r.output
    for name in ("gradcam_overlay.png", "patch_grid.png"):
        png = np.asarray(Image.open(out / name).convert("RGB"))
        title = next(line.split("Saved: ")[1] for line in r.output.splitlines() if name in line)
        assert title.endswith(name)
        top = render.title_height("x", 451)  # one line of title at least
        assert png.shape[1] == 451 and png.shape[0] > 300 + top
        band = png[:top]
        assert (band < 100).any() and (band == 255).mean() > 0.5  # dark text on white
        bar = png[-render.colour_bar(451).shape[0]:] if name == "gradcam_overlay.png" else png[300 + top:]
        lut = render.colormap_lut("jet")
        reds = np.all(np.abs(bar.astype(int) - lut[-1].astype(int)) < 8, axis=-1)
        blues = np.all(np.abs(bar.astype(int) - lut[0].astype(int)) < 8, axis=-1)
        assert reds.any() and blues.any()
        assert np.argwhere(blues)[:, 1].mean() < np.argwhere(reds)[:, 1].mean()  # low on the left, high on the right
    grid = np.asarray(Image.open(out / "patch_grid.png").convert("RGB"))
    gradcam = np.asarray(Image.open(out / "gradcam_overlay.png").convert("RGB"))
    assert grid.shape[0] > gradcam.shape[0]  # the legend line


def test_figure_keeps_the_image_pixels():
    from auditor import render

    img = np.random.default_rng(0).integers(0, 255, (50, 120, 3), dtype=np.uint8)
    fig = render.figure(img, "a title", cmap="cividis", legend="a legend")
    top = render.title_height("a title", 120)
    np.testing.assert_array_equal(fig[top:top + 50], img)
    assert fig.shape[1] == 120


def test_support_on_a_plain_vit_adds_no_multi_attention_figure(chelsea_png, tmp_path):
    out = tmp_path / "o"
    r = invoke("visualize", "--image-path", chelsea_png, "--arch", "vit_tiny", "--depth", 1, "--out", out,
               "--support", chelsea_png)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["gradcam_overlay.png", "patch_attention_overlay.png",
                                                     "patch_grid.png"]
    assert "support prototype" in r.output


def test_loading_line_names_the_bundled_checkpoint(chelsea_png, tmp_path):
    r = invoke("visualize", "--image-path", chelsea_png, "--checkpoint", "demo:clean", "--out", tmp_path / "o")
    assert "[2/4] Loading model: demo:clean" in r.output and "None" not in r.output


def _maps(out):
    with np.load(out / "maps.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def classifier_ckpt(tmp_path):
    """A 2-block ViT-Ti/16 with a 5-class head and random LayerNorm weights (default norms make a
    headless Grad-CAM float noise), as a state_dict file."""
    torch.manual_seed(0)
    model = create_model("vit_tiny", depth=2, num_classes=5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.5)
    path = tmp_path / "classifier.pth"
    torch.save(model.state_dict(), path)
    return path


def test_method_option_sets_the_gradcam_layer_and_the_attention_head(chelsea_png, classifier_ckpt, tmp_path):
    base = ["visualize", "--image-path", chelsea_png, "--arch", "vit_tiny", "--depth", 2, "--save-maps",
            "--checkpoint", classifier_ckpt, "--target-class", 2]
    assert invoke(*base, "--out", tmp_path / "a").exit_code == 0
    r = invoke(*base, "--out", tmp_path / "b", "--method-option", "gradcam.layer=blocks.0.norm1",
               "--method-option", "cls_attention.head=1")
    assert r.exit_code == 0, r.output
    r2 = invoke(*base, "--out", tmp_path / "c", "--gradcam-layer", "blocks.0.norm1", "--head", "1")
    assert r2.exit_code == 0, r2.output
    a, b, c = _maps(tmp_path / "a"), _maps(tmp_path / "b"), _maps(tmp_path / "c")
    assert not np.allclose(a["gradcam/chelsea"], b["gradcam/chelsea"])
    assert not np.allclose(a["cls_attention/chelsea"], b["cls_attention/chelsea"])
    for k in b:  # the option and its shorthand are the same setting
        np.testing.assert_array_equal(b[k], c[k])


@pytest.mark.parametrize("args, message", [
    (["--gradcam-layer", "blocks.1.norm1", "--method-option", "gradcam.layer=blocks.0.norm1"], "set the same thing"),
    (["--method-option", "rollout.head_fusion=max"], "not among the methods"),
    (["--method-option", "gradcam.nope=1"], "Valid options: gradcam.layer"),
    (["--method-option", "cls_attention.head=x"], "expected int"),
])
def test_bad_method_options_exit_2_naming_the_fix(chelsea_png, tmp_path, args, message):
    r = CliRunner().invoke(main, ["visualize", "--image-path", str(chelsea_png), "--arch", "vit_tiny", "--depth", "2",
                                  "--out", str(tmp_path / "o"), *map(str, args)])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_resize_crop_maps_cover_the_crop_and_the_log_says_where(chelsea_png, tmp_path):
    out = tmp_path / "o"
    r = invoke("visualize", "--image-path", chelsea_png, "--arch", "vit_tiny", "--depth", 2, "--resize", "crop",
               "--out", out, "--save-maps")
    assert r.exit_code == 0, r.output
    # 300 x 451 -> short side floor(224 / 0.875) = 256, long int(256 * 451 / 300) = 384; left round(80.0) = 80
    assert "the model sees x 94-357, y 19-281 of the image" in r.output
    m = _maps(out)["gradcam/chelsea"]
    assert m.shape == (300, 451)
    inside = m[19:281, 94:357]
    assert (m[:, :90] == inside.min()).all() and (m[:, 360:] == inside.min()).all()


def test_target_class_takes_a_model_class_name(chelsea_png, classifier_ckpt, tmp_path):
    """demo:clean names its classes: `--target-class square` explains the same class as its index."""
    from auditor.models import build_model

    names = list(build_model(checkpoint="demo:clean").model.class_names)
    base = ["visualize", "--image-path", chelsea_png, "--checkpoint", "demo:clean", "--save-maps"]
    by_name = invoke(*base, "--out", tmp_path / "name", "--target-class", "Square")  # case-insensitive, as audits
    by_index = invoke(*base, "--out", tmp_path / "index", "--target-class", names.index("square"))
    assert by_name.exit_code == 0 and by_index.exit_code == 0, by_name.output + by_index.output
    assert f"Target: class {names.index('square')} (given)" in by_name.output
    a, b = _maps(tmp_path / "name"), _maps(tmp_path / "index")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    other = invoke(*base, "--out", tmp_path / "other", "--target-class", "disc")
    assert not np.array_equal(_maps(tmp_path / "other")["gradcam/chelsea"], a["gradcam/chelsea"]), other.output

    wrong = invoke(*base, "--out", tmp_path / "w", "--target-class", "sqare")
    assert wrong.exit_code == 2 and "not one of the model's class names" in wrong.output
    assert all(f"{n} ({i})" in wrong.output for i, n in enumerate(names))  # the fix: the valid names
    nameless = invoke("visualize", "--image-path", chelsea_png, "--arch", "vit_tiny", "--depth", 2,
                      "--checkpoint", classifier_ckpt, "--out", tmp_path / "n", "--target-class", "cat")
    assert nameless.exit_code == 2 and "names none of its 5 classes; give the class index (0..4)" in nameless.output
