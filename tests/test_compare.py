"""`auditor compare`: two models on the same images, one report, a regression gate.

A looks at the object (the colour ViT of test_run), B at a corner (CornerCNN): B must come
out worse with a CI that excludes zero, and ``--max-drop`` must fail with exit 1.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.compare import compare_models, compare_results

from test_report import make_audit
from test_run import CornerCNN, _vit, write_square_set

CORNER = {"model": None, "image_size": 32, "mean": (0, 0, 0), "std": (1, 1, 1)}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A (looks at the square) and B (looks at the corner) audited on the square set, compared."""
    root = tmp_path_factory.mktemp("cmp")
    data = write_square_set(root / "data")
    comp = compare_models(data, out=root / "cmp", model_a={"model": _vit()}, model_b={**CORNER, "model": CornerCNN()},
                          methods=["gradcam"], max_drop=["gradcam.pointing_game=0.05"])
    return comp


def test_the_corner_model_is_worse_with_a_ci_that_excludes_zero(two_models):
    d = two_models.data["deltas"]["gradcam"]
    pg, mass = d["pointing_game"], d["relevance_mass"]
    assert pg["mean_a"] == 1.0 and pg["mean_b"] == 0.0 and pg["delta"] == -1.0
    assert pg["worse"] and pg["ci_high"] < 0 and pg["p_value"] < 0.01
    assert mass["worse"] and mass["ci_high"] < 0
    assert two_models.data["counts"] == {"paired": 24, "only_a": 0, "only_b": 0}
    agree = two_models.data["agreement"]["gradcam"]
    assert agree["spearman"]["mean"] < 0.5 and agree["top_k_overlap"]["mean"] < 0.5


def test_the_gate_fails_with_a_junit_case_per_check(two_models):
    assert not two_models.passed
    v, errors = two_models.data["verdicts"]  # the paired drop check, then B's error rows
    assert v["name"] == "gradcam.pointing_game drop <= 0.05" and v["value"] == pytest.approx(1.0)
    assert errors["name"] == "errors.error_rows <= 0" and errors["passed"]
    suite = ET.parse(two_models.out / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    saved = json.loads((two_models.out / "comparison.json").read_text())
    assert saved["passed"] is False and saved["deltas"]["gradcam"]["pointing_game"]["worse"] is True
    assert (two_models.out / "a" / "results.json").is_file() and (two_models.out / "b" / "results.json").is_file()


def test_the_report_lists_the_most_disagreeing_images_first(two_models):
    images = two_models.data["images"]
    scores = [img["disagreement"] for img in images]
    assert scores == sorted(scores, reverse=True)
    page = (two_models.out / "report.html").read_text(encoding="utf-8")
    ids = re.findall(r'<article class="card" id="card-\d+"[^>]*>\s*<header><h3><code>([^<]+)</code>', page)
    assert [html.unescape(i) for i in ids] == [img["id"] for img in images]
    assert "B worse" in page and "A: gradcam" in page and "B: gradcam" in page
    assert "gradcam.pointing_game drop &lt;= 0.05" in page and "✗ FAIL" in page


def test_cli_compare_results_exit_codes(two_models, tmp_path):
    a, b = two_models.out / "a" / "results.json", two_models.out / "b" / "results.json"
    args = ["compare", "--results-a", str(a), "--results-b", str(b)]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c1"), "--max-drop", "gradcam.pointing_game=0.05"])
    assert r.exit_code == 1, r.output
    assert "B worse" in r.output and "FAIL  gradcam.pointing_game drop <= 0.05" in r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c2"), "--max-drop", "gradcam.pointing_game=1.0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c3")])  # no gate: reports only
    assert r.exit_code == 0 and (tmp_path / "c3" / "report.html").is_file()
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c4"), "--max-drop", "gradcam.pointing_game"])
    assert r.exit_code == 2 and "METHOD.METRIC=VALUE" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["compare", "--results-a", str(a), "--out", str(tmp_path / "c5")])
    assert r.exit_code == 2 and "--results-b" in r.output


def test_cli_compare_two_models(tmp_path, monkeypatch):
    data = write_square_set(tmp_path / "data", n=8)
    (tmp_path / "toys.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_run import _vit, CornerCNN\n"
        "def vit():\n    return _vit()\ndef corner():\n    return CornerCNN()\n"
        % str(__import__("pathlib").Path(__file__).parent))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["compare", "--data", str(data), "--model-a", "toys:vit", "--model-b", "toys:corner",
                                  "--methods", "gradcam", "--image-size", "32", "--out", "cmp",
                                  "--max-drop", "gradcam.pointing_game=0.05"])
    assert r.exit_code == 1, r.output
    assert (tmp_path / "cmp" / "report.html").is_file() and (tmp_path / "cmp" / "junit.xml").is_file()


def test_identical_runs_agree_and_pass(tmp_path):
    results = make_audit(tmp_path, n=10, errors=False)
    comp = compare_results(results, results, out=tmp_path / "same", max_drop=["gradcam.relevance_mass=0.0"])
    assert comp.passed
    g = comp.data["deltas"]["gradcam"]["relevance_mass"]
    assert g["delta"] == 0.0 and not g["worse"] and not g["better"]
    assert comp.data["agreement"]["gradcam"]["spearman"]["mean"] == pytest.approx(1.0)
    assert comp.data["agreement"]["gradcam"]["top_k_overlap"]["mean"] == pytest.approx(1.0)


def test_compare_report_escapes_user_strings_and_needs_no_model(tmp_path, monkeypatch):
    import auditor.models

    monkeypatch.setattr(auditor.models, "build_model", lambda *a, **k: pytest.fail("no model may be built"))
    a = make_audit(tmp_path / "a", n=6)
    b = make_audit(tmp_path / "b", n=6, corner=True)
    comp = compare_results(a, b, out=tmp_path / "cmp")
    page = (tmp_path / "cmp" / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page and "<script>alert" not in page
    assert comp.data["deltas"]["gradcam"]["pointing_game"]["worse"]


def test_runs_without_a_common_method_are_a_usage_error(tmp_path):
    a = make_audit(tmp_path / "a", n=4, methods=("gradcam",))
    b = make_audit(tmp_path / "b", n=4, methods=("rollout",))
    r = CliRunner().invoke(main, ["compare", "--results-a", str(a), "--results-b", str(b), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "share no method" in r.output


def test_the_report_draws_only_the_most_disagreeing_images_when_told(two_models, tmp_path):
    from auditor.report.compare import render_comparison
    from auditor.results import AuditResult

    runs = [AuditResult.load(two_models.out / side / "results.json") for side in ("a", "b")]
    comp = type(two_models)(two_models.data, tmp_path)
    page = render_comparison(comp, *runs, gallery=5).read_text(encoding="utf-8")
    ids = re.findall(r'<article class="card" id="card-\d+"[^>]*>\s*<header><h3><code>([^<]+)</code>', page)
    assert [html.unescape(i) for i in ids] == [img["id"] for img in two_models.data["images"][:5]]
    assert "Showing the 5 of 24 paired images where A&#39;s and B&#39;s maps disagree most" in page
