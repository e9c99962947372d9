"""What the commands print: described listings, the demo's last line, aligned compare columns,
the no-checkpoint warning, the shared option names and their hidden old spellings."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.demo import gate_line
from auditor.methods import list_methods
from auditor.models import build_model, list_models
from auditor.compare import format_comparison


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_models_prints_a_described_table():
    r = invoke("models")
    assert r.exit_code == 0
    rows = {line.split()[0]: line for line in r.output.splitlines()[1:] if line.split() and line.split()[0] in list_models()}
    assert set(rows) == set(list_models())
    assert re.search(r"efficientnet_lite0\s+CNN\s", rows["efficientnet_lite0"])
    assert "patch" not in rows["efficientnet_lite0"]
    assert re.search(r"vit_small\s+ViT\s", rows["vit_small"]) and "width 384" in rows["vit_small"]
    assert "demo:clean" in r.output and "--model package.module:factory" in r.output


def test_methods_prints_family_and_needs():
    r = invoke("methods")
    assert r.exit_code == 0
    lines = {line.split()[0]: line for line in r.output.splitlines()[1:] if line.split()}
    assert set(list_methods()) <= set(lines)
    assert re.search(r"gradcam\s+CAM\s", lines["gradcam"]) and "any model" in lines["gradcam"]
    assert re.search(r"input_gradient\s+gradient\s+vanilla gradient", lines["input_gradient"])
    assert re.search(r"rollout\s+attention\s", lines["rollout"]) and "CLS token" in lines["rollout"]
    header = r.output.splitlines()[0]
    for name in list_methods():  # the family column starts at the same offset on every row
        assert re.match(r"\S+\s+", lines[name]).end() == header.index("FAMILY")
    assert re.search(r"rise\s+perturbation\s+RISE", lines["rise"])
    assert re.search(r"scorecam\s+CAM\s+Score-CAM: each channel", lines["scorecam"])
    assert "Base" not in r.output  # no row falls back to a base class's docstring
    assert "  rise: n_masks forwards per image (masked copies), batched; no backward" in r.output.splitlines()


def test_a_cnn_records_no_patch_size():
    assert "patch_size" not in build_model("efficientnet_lite0").describe()["kwargs"]
    assert build_model("vit_tiny", depth=1).describe()["kwargs"]["patch_size"] == 16


def test_demo_last_line_shows_scores_not_the_allowed_drop():
    comp = SimpleNamespace(passed=False, data={
        "verdicts": [{"method": "rollout", "metric": "pointing_game", "threshold": 0.1, "passed": False, "reason": ""},
                     {"method": "gradcam", "metric": "pointing_game", "threshold": 0.1, "passed": True, "reason": ""}],
        "deltas": {"rollout": {"pointing_game": {"mean_a": 0.82, "mean_b": 0.31}},
                   "gradcam": {"pointing_game": {"mean_a": 0.5, "mean_b": 0.55}}}})
    assert gate_line(comp) == (
        "The shortcut model FAILS the gate: rollout pointing game 0.82 (clean) -> 0.31 (shortcut), a drop of 0.51 "
        "where at most 0.10 is allowed [FAIL]; gradcam pointing game 0.50 (clean) -> 0.55 (shortcut), a gain of "
        "0.05 where at most 0.10 is allowed.")


def test_compare_console_columns_line_up_across_methods():
    d = lambda delta, worse: {"delta": delta, "ci_low": delta - 0.1, "ci_high": delta + 0.1, "p_value": 0.01,  # noqa: E731
                              "worse": worse, "better": False, "mean_a": 0.9, "mean_b": 0.9 + delta, "n": 1}
    data = {"counts": {"paired": 1, "only_a": 0, "only_b": 0},
            "deltas": {"cls_attention": {"auc_roc": d(-0.5, True)}, "rollout": {"pointing_game": d(0.25, False)}},
            "agreement": {}, "a": {}, "b": {}, "images": [], "verdicts": [], "passed": True}
    lines = format_comparison(data).splitlines()
    assert lines[0].startswith("1 image scored by both; 0 only by A, 0 only by B")
    assert lines[2].index("-0.500") == lines[3].index("+0.250")  # after the header row
    assert lines[1].index("delta (95% CI)") == lines[2].index("-0.500")
    assert lines[2].endswith("B worse") and not lines[3].endswith(" ")


def test_run_without_a_checkpoint_warns(tmp_path):
    from auditor.datasets.synthetic import write_dataset

    data = write_dataset(tmp_path / "data", 4, seed=2)
    r = invoke("run", "--data", data, "--arch", "vit_tiny", "--depth", 1, "--methods", "gradcam", "--out",
               tmp_path / "o", "--no-report")
    assert r.exit_code == 0, r.output
    assert "Warning: no --checkpoint: vit_tiny is audited with its untrained (random) weights" in r.output


def test_report_says_untrained_weights_for_a_model_without_checkpoint():
    from auditor.report.common import model_rows

    rows = model_rows([{"name": "vit_tiny", "checkpoint": None}, {"name": "pkg.nets:build", "checkpoint": None}])
    assert rows[0]["checkpoint"] == "(none: untrained, randomly initialised weights)"
    assert rows[1]["checkpoint"] == "(none: the factory's own weights)"


@pytest.mark.parametrize("command", ["run", "compare", "report", "visualize", "demo"])
def test_shared_options_have_one_name_and_hide_old_spellings(command):
    help_text = invoke(command, "--help").output
    assert "--colormap" in help_text and "--cmap" not in help_text
    assert "_" not in "".join(re.findall(r"--[a-z_-]+", help_text))  # no guide spellings in the help
    if command != "report":
        assert "--device" in help_text or command == "compare" and "--results-a" in help_text


def test_old_spellings_still_parse(tmp_path):
    img = tmp_path / "i.png"
    from PIL import Image

    Image.new("RGB", (40, 32), (90, 120, 30)).save(img)
    r = invoke("visualize", "--image_path", img, "--model_path", "demo:clean", "--output_dir", tmp_path / "o",
               "--cmap", "cividis", "--image_size", 64)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "gradcam_overlay.png").is_file()


def test_option_errors_name_the_visible_spelling(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 32)).save(tmp_path / "x.png")
    r = invoke("visualize", "--image_path", tmp_path / "x.png", "--cmap", "nope")
    assert "'--colormap'" in r.output and "--cmap'" not in r.output


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_an_hf_folder_carries_its_weights_and_swin_maps_window_attention(tmp_path):
    """--model hf:FOLDER loads the folder's model.safetensors: no "untrained weights" warning; on Swin
    (windows, no CLS token) cls_attention is skipped naming window_attention, which runs."""
    from test_run import write_square_set

    data = write_square_set(tmp_path / "data", n=4)
    folder = Path(__file__).parent / "data" / "hf_swin_windows"
    r = invoke("run", "--data", data, "--model", f"hf:{folder}", "--methods", "gradcam,window_attention,cls_attention",
               "--target", "predicted", "--out", tmp_path / "o", "--no-report")
    assert r.exit_code == 0, r.output
    assert "untrained" not in r.output and "Loading weights" not in r.output
    settings = json.loads((tmp_path / "o" / "results.json").read_text())["settings"]
    assert settings["models"][0]["checkpoint"]["path"] == str(folder / "model.safetensors")
    assert settings["skipped_methods"] == {"cls_attention": "the model attends within windows and has no CLS token "
                                                            "(Swin): its attention is mapped by window_attention"}
    assert set(settings["methods"]) == {"gradcam", "window_attention"}
