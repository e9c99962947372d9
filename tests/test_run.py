"""`auditor run`: a generated data set where the evidence is known by construction."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import jsonschema
import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.results import schema_path
from auditor.runner import run_audit
from auditor.savers import read_map

from conftest import colour_vit

CELL = 16  # 64 px images, a 4 x 4 grid of 16 px cells; the model sees 32 px (8 px patches)


def write_square_set(root, n=24, seed=0, extra_lines=()):
    """Grey-noise 64 px images with one red 16 px square on the cell grid, never in the
    top-left cell; manifest.jsonl with its box and 5 fixations inside it."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"classes": ["red", "green", "blue"]})]
    cells = [(r, c) for r in range(4) for c in range(4) if (r, c) != (0, 0)]
    for i in range(n):
        img = np.repeat((rng.random((64, 64, 1)) * 128).astype(np.uint8), 3, axis=2)
        r, c = cells[i % len(cells)]
        y0, x0 = r * CELL, c * CELL
        img[y0:y0 + CELL, x0:x0 + CELL] = (255, 0, 0)
        Image.fromarray(img).save(root / f"img{i:03d}.png")
        fix = [[float(x0 + rng.uniform(2, 14)), float(y0 + rng.uniform(2, 14))] for _ in range(5)]
        lines.append(json.dumps({"image": f"img{i:03d}.png", "label": "red", "boxes": [[x0, y0, x0 + CELL, y0 + CELL]],
                                 "fixations": fix}))
    lines += list(extra_lines)
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"


class CornerCNN(nn.Module):
    """Looks at the top-left corner whatever the image: its feature map is the image's
    brightness times a fixed bump there, and every class sums that map."""

    num_classes = 3
    class_names = ["red", "green", "blue"]

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(1 / 3)
            self.features[0].bias.fill_(0.1)
        yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        self.register_buffer("bump", torch.exp(-((yy - 3) ** 2 + (xx - 3) ** 2) / 8))
        self.head = nn.Linear(1, 3)
        with torch.no_grad():
            self.head.weight.fill_(1.0)  # every class sums the map (a random sign made the test flaky)

    def forward(self, x):
        f = self.features(x) * self.bump
        return self.head(f.mean((2, 3)))


@pytest.fixture
def squares(tmp_path):
    return write_square_set(tmp_path / "data")


def _vit():
    m = colour_vit()
    m.default_cfg = {"input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)}
    return m


def test_looking_model_scores_1_corner_model_scores_0_centre_between(squares, tmp_path):
    good = run_audit(squares, out=tmp_path / "good", model=_vit(), methods=["gradcam"])
    bad = run_audit(squares, out=tmp_path / "bad", model=CornerCNN(), methods=["gradcam"],
                    image_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    pg = lambda r, m: r.summary[m]["pointing_game"].mean  # noqa: E731
    assert pg(good, "gradcam") == 1.0
    assert pg(bad, "gradcam") == 0.0
    assert 0.0 < pg(good, "centre") < 1.0  # the squares at the centre cell
    assert good.summary["gradcam"]["relevance_mass"].mean > 0.5 > bad.summary["gradcam"]["relevance_mass"].mean
    assert good.summary["gradcam"]["nss"].mean > good.summary["centre"]["nss"].mean
    assert good.summary["gradcam"]["pointing_game"].n == 24
    s = good.summary["gradcam"]["auc_roc"]
    assert s.ci_low <= s.mean <= s.ci_high


def test_results_json_matches_the_shipped_schema(squares, tmp_path):
    run_audit(squares, out=tmp_path / "o", model=_vit(), fail_under=["gradcam.pointing_game=0.9"])
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    jsonschema.validate(data, json.loads(schema_path().read_text()))
    assert data["passed"] is True
    assert data["settings"]["preprocessing"]["size"] == [32, 32]
    assert data["settings"]["methods"]["gradcam"]["normalization"] == "relu_minmax"
    assert "cls_attention" in data["settings"]["skipped_methods"] or "cls_attention" in data["summary"]
    assert read_map(tmp_path / "o" / "token_maps.npz", "gradcam", "img000.png").shape == (4, 4)


def test_bad_records_become_error_rows_and_the_rest_is_intact(squares, tmp_path):
    root = squares.parent
    (root / "corrupt.png").write_bytes(b"not an image")
    extra = [
        json.dumps({"image": "missing.png", "label": "red"}),
        json.dumps({"image": "corrupt.png", "label": "red"}),
        json.dumps({"image": "img000.png", "id": "outside", "label": "red", "boxes": [[50, 50, 80, 60]]}),
    ]
    with open(squares, "a") as f:
        f.write("\n".join(extra) + "\n")
    res = run_audit(squares, out=tmp_path / "o", model=_vit(), methods=["gradcam"])
    errors = {r["id"]: r["error"] for r in res.rows if r["error"]}
    assert len(errors) == 3, errors
    assert "not found" in errors["missing.png"].lower()
    assert "corrupt.png" in errors["corrupt.png"]
    assert "outside" in errors["outside"].lower() or "64" in errors["outside"]
    assert res.summary["gradcam"]["pointing_game"].mean == 1.0 and res.summary["gradcam"]["pointing_game"].n == 24
    assert res.data["counts"] == {"images": 27, "ok": 24, "errors": 3}


def test_cli_exit_codes_and_junit(squares, tmp_path, monkeypatch):
    (tmp_path / "toy.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_run import _vit\ndef build():\n    return _vit()\n"
        % str(__import__("pathlib").Path(__file__).parent))
    monkeypatch.chdir(tmp_path)
    args = ["run", "--data", str(squares), "--model", "toy:build", "--methods", "gradcam"]
    r = CliRunner().invoke(main, args + ["--out", "pass", "--fail-under", "gradcam.pointing_game=0.9"])
    assert r.exit_code == 0, r.output
    assert "PASS  gradcam.pointing_game >= 0.9" in r.output
    r = CliRunner().invoke(main, args + ["--out", "fail", "--fail-under", "gradcam.relevance_mass=0.99",
                                         "--fail-under", "gradcam.pointing_game=0.5"])
    assert r.exit_code == 1, r.output
    suite = ET.parse(tmp_path / "fail" / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"  # 2 thresholds + the error-row check
    failure = suite.find("testcase[@name='gradcam.relevance_mass >= 0.99']/failure")
    assert failure is not None and "measured 0." in failure.get("message")
    r = CliRunner().invoke(main, args + ["--out", "fail"])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = CliRunner().invoke(main, args + ["--out", "x", "--fail-under", "gradcam.pointing_game"])
    assert r.exit_code == 2 and "METHOD.METRIC=VALUE" in r.output and "Traceback" not in r.output


def test_thresholds_file_per_class_and_baseline_drop(squares, tmp_path):
    first = run_audit(squares, out=tmp_path / "a", model=_vit(), methods=["gradcam"])
    toml = tmp_path / "audit.toml"
    toml.write_text("[gradcam.pointing_game]\nmin = 0.9\nmax_drop = 0.05\n"
                    "[gradcam.pointing_game.per_class]\nred = { min = 0.95 }\n"
                    "[gradcam.nss]\nmin = -100.0\n")
    res = run_audit(squares, out=tmp_path / "b", model=CornerCNN(), methods=["gradcam"], thresholds=toml,
                    baseline=tmp_path / "a" / "results.json", image_size=32,
                    allow_different_data=True)  # another model, its own normalisation: said explicitly
    by_name = {v["name"]: v for v in res.verdicts}
    assert not res.passed
    assert by_name["gradcam.pointing_game >= 0.9"]["value"] == 0.0
    assert by_name["gradcam.pointing_game[red] >= 0.95"]["passed"] is False
    assert by_name["gradcam.pointing_game drop <= 0.05"]["value"] == pytest.approx(1.0)
    assert first.passed  # no thresholds: passes


def test_no_valid_image_is_an_input_error(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "nope.png", "label": 0, "boxes": [[0, 0, 4, 4]]}) + "\n")
    r = CliRunner().invoke(main, ["run", "--data", str(tmp_path / "m.jsonl"), "--arch", "vit_tiny", "--depth", "1",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "could be scored" in r.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["counts"]["errors"] == 1


def test_pytest_fixture(squares, pytester_free_auditor_run):
    r = pytester_free_auditor_run(data=squares, model=_vit(), methods=["gradcam"])
    assert r.summary["gradcam"]["pointing_game"].mean >= 0.8


@pytest.fixture
def pytester_free_auditor_run(auditor_run):
    """The plugin's fixture, as a user's test asks for it."""
    return auditor_run


def test_engine_ray_without_ray_says_how_to_install_it(squares, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` raises ImportError
    from auditor.errors import UsageError

    with pytest.raises(UsageError, match=r"attention-auditor\[ray\]"):
        run_audit(squares, out=tmp_path / "o", model=_vit(), methods=["gradcam"], engine="ray")
    assert not (tmp_path / "o").exists()  # refused before anything was written
    with pytest.raises(UsageError, match="--engine must be one of auto, local, processes, ray"):
        run_audit(squares, out=tmp_path / "o2", model=_vit(), engine="spark")


def test_text_summary_wraps_metrics_into_tables_that_fit():
    from auditor.results import format_summary

    stat = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3, "n_nan": 0}
    metrics = [f"metric_{i}" for i in range(7)]
    data = {"summary": {"gradcam": {m: stat for m in metrics}, "centre": {m: stat for m in metrics}},
            "counts": {"ok": 3, "errors": 0}, "verdicts": [], "passed": True}
    lines = format_summary(data, width=100).splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("method")]
    assert len(headers) == 3 and all(len(line) <= 100 for line in lines)
    assert [lines[h].split()[3:] for h in headers] == [metrics[:3], metrics[3:6], metrics[6:]]  # after "method n (NaN)"
    assert lines[headers[0] + 1].split()[1:] == ["3", "(0)"] + ["0.500", "[0.40,", "0.60]"] * 3  # n, then each CI
    assert "centre (baseline)" in lines[headers[1] + 2]
