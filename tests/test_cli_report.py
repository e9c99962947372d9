"""Report readability (issue 16): figures per metric, the pointing game as a proportion with its
interval, integer layer ticks, two distinguishable baselines, the reference outline on every
overlay, model class names, re-rendering a comparison, and `auditor init`'s pytest audit."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.report import plots


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_baselines_get_two_different_greys_and_methods_the_palette():
    cs = plots.colours(["gradcam", "rollout", "centre", "random"])
    assert cs[:2] == list(plots.OKABE_ITO[:2])
    assert cs[2] != cs[3] and cs[2] == plots.BASELINE_COLOURS["centre"]


def test_pointing_game_is_a_proportion_panel_and_each_panel_fits_a_phone():
    values = {"gradcam": {"pointing_game": [1.0, 0.0, 1.0, 1.0], "relevance_mass": [0.2, 0.5, 0.4, 0.9]},
              "centre": {"pointing_game": [1.0, 1.0, 0.0, 0.0], "relevance_mass": [0.3, 0.3, 0.2, 0.4]}}
    summary = {"gradcam": {"pointing_game": {"mean": 0.75, "ci_low": 0.3, "ci_high": 0.95}}}
    panels = plots.metric_panels(values, ["gradcam", "centre"], ["pointing_game", "relevance_mass"], summary)
    assert [(m, binary) for m, binary, _ in panels] == [("pointing_game", True), ("relevance_mass", False)]
    for _, _, png in panels:
        h, w = _png(png).shape[:2]
        assert w <= 440 and h <= 320  # one panel per metric: shown at full width on a 400 px screen


def test_binary_detection_from_values():
    assert plots.is_binary("hit", {"m": [0.0, 1.0, 1.0]})
    assert not plots.is_binary("relevance_mass", {"m": [0.0, 0.5]})


def test_layer_axis_has_integer_ticks():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    layers = {"cls_attention": {"pointing_game": [{"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3},
                                                  {"mean": 0.6, "ci_low": 0.5, "ci_high": 0.7}]}}
    out = plots.per_layer(layers, {"centre": {"pointing_game": {"mean": 0.4}}})
    assert [m for m, _ in out] == ["pointing_game"]
    # the same axis setup as per_layer: two layers would otherwise get ticks at 0.5 / 1.5
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0.2, 0.6])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 1]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_every_overlay_carries_the_reference_outline(tmp_path):
    """A grey-scale overlay has no yellow of its own: the yellow pixels are the box outline."""
    from auditor.report.gallery import Job, _draw
    from auditor.report.assets import BOX_COLOUR

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "im.png")
    mask = np.zeros((200, 200), bool)
    mask[50:150, 50:150] = True

    class Refs:
        def of(self, image_id, shape):
            return mask, None

    token_map = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    job = Job(tmp_path / "im.png", "im", "im", [("", "gradcam", "minmax", token_map)])
    original, panels, problem = _draw(job, Refs(), "gray", "overlay")
    assert problem == ""
    for jpeg in (original, panels[0]):
        px = _png(jpeg).astype(int)
        yellow = np.all(np.abs(px - np.array(BOX_COLOUR)) < 60, axis=-1)
        rows, cols = np.nonzero(yellow)
        # a 2 px outline along the box's 400 px perimeter (JPEG blurs some of it), nothing elsewhere
        assert yellow.sum() > 500 and rows.min() >= 48 and rows.max() <= 151 and cols.min() >= 48 and cols.max() <= 151
        assert not yellow[60:140, 60:140].any()  # an outline, not a fill


def test_predictions_use_the_model_class_names():
    from auditor.report.common import prediction_name

    data = {"settings": {"classes": ["cat", "dog"], "models": [{"name": "m", "classes": ["tench", "goldfish"]}]}}
    assert prediction_name(data, 1) == "goldfish (1)"
    data["settings"]["models"] = [{"name": "m"}]
    assert prediction_name(data, 1) == "dog (1)"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "d"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "-n", "4"])
    assert r.exit_code == 0, r.output
    return out


def test_report_rerenders_a_comparison(demo_run, tmp_path):
    r = CliRunner().invoke(main, ["report", str(demo_run / "comparison.json"), "--out", str(tmp_path / "c.html"),
                                  "--colormap", "cividis"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "Attention comparison" in page and "cividis" in page
    assert "on its own thresholds" not in page and "B (candidate)" in page
    r = CliRunner().invoke(main, ["report", str(demo_run)])  # the folder: its comparison.json
    assert r.exit_code == 0 and "report.html" in r.output


def test_report_sort_by_does_not_apply_to_a_comparison(demo_run):
    r = CliRunner().invoke(main, ["report", str(demo_run / "comparison.json"), "--sort-by", "rollout.nss"])
    assert r.exit_code == 2 and "--sort-by rollout.nss" in r.output


def test_init_writes_a_pytest_audit_that_passes_on_the_demo_model(tmp_path):
    from auditor.datasets.synthetic import write_dataset

    write_dataset(tmp_path / "data", 6, seed=3)
    r = CliRunner().invoke(main, ["init", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    workflow = (tmp_path / ".github" / "workflows" / "attention-audit.yml").read_text()
    assert "upload-artifact" in workflow and "audit-out/report.html" in workflow and "audit-out/junit.xml" in workflow
    assert "pytest tests/test_attention_audit.py" in workflow
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_attention_audit.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "audit-out" / "report.html").is_file() and (tmp_path / "audit-out" / "junit.xml").is_file()
    verdicts = json.loads((tmp_path / "audit-out" / "results.json").read_text())["verdicts"]
    assert {v["name"] for v in verdicts} == {"gradcam.pointing_game >= 0.5", "rollout.pointing_game >= 0.5",
                                            "errors.error_rows <= 0"}
    # the same test fails when a threshold does not hold
    toml = (tmp_path / "audit.toml").read_text().replace("min = 0.5", "min = 1.01", 1)
    (tmp_path / "audit.toml").write_text(toml)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_attention_audit.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "gradcam.pointing_game >= 1.01" in proc.stdout
