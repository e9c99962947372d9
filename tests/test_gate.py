"""The gate never passes what it should fail (issue 14): class mapping by name, missing
evidence counted against a check, error rows, validation before any work, paired compares."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.compare import compare_results
from auditor.errors import UsageError
from auditor.gate import GateOptions, evaluate, validate_checks
from auditor.metrics.stats import wilson_ci
from auditor.models import create_model
from auditor.results import AuditResult
from auditor.runner import run_audit
from auditor.scoring import summarise
from auditor.thresholds import Check, parse_assignment

from test_report import make_audit
from test_run import write_square_set


# -- statistics -------------------------------------------------------------------------

def test_wilson_interval_does_not_collapse_at_0_or_1():
    # Wilson (1927) score interval, z = 1.959964: 5/5 -> [0.5655, 1], 0/5 -> [0, 0.4345], 7/10 -> [0.3968, 0.8922]
    # (the 7/10 bounds are Newcombe 1998, Statist. Med. 17:857, Table II, method 3: 0.3968-0.8922)
    assert wilson_ci([1] * 5).to_dict() == pytest.approx({"mean": 1.0, "ci_low": 0.565518, "ci_high": 1.0,
                                                          "n": 5, "n_nan": 0}, abs=1e-6)
    assert (wilson_ci([0] * 5).ci_low, round(wilson_ci([0] * 5).ci_high, 4)) == (0.0, 0.4345)
    s = wilson_ci([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, np.nan])
    assert (round(s.ci_low, 4), round(s.ci_high, 4), s.n, s.n_nan) == (0.3968, 0.8922, 10, 1)
    with pytest.raises(ValueError, match="binary"):
        wilson_ci([0.5, 1.0])


def test_pointing_game_summaries_use_wilson_other_metrics_the_bootstrap():
    rows = [{"metrics": {"m": {"pointing_game": 1.0, "relevance_mass": 0.5 + i / 10}}} for i in range(5)]
    s = summarise(rows)["m"]
    assert s["pointing_game"]["interval"] == "wilson" and s["pointing_game"]["ci_low"] == pytest.approx(0.565518, 1e-5)
    assert s["relevance_mass"]["interval"] == "bootstrap"


# -- fail closed on NaN maps ------------------------------------------------------------

class RedOnlyCNN(nn.Module):
    """Its feature map is ReLU(red - green - 0.5): zero on grey images (Grad-CAM is constant
    there), positive only on pure red pixels (Grad-CAM peaks on the red square)."""

    num_classes = 3
    class_names = ["red", "green", "blue"]

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([1.0, -1.0, 0.0])[None, :, None, None])
            self.features[0].bias.fill_(-0.5)
        self.head = nn.Linear(1, 3)
        with torch.no_grad():
            self.head.weight.fill_(1.0)  # positive evidence for every class: no random sign
        self.default_cfg = {"input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)}

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _mostly_grey(root, n=100, red=3):
    """``n`` 32 px images with a box each; only the first ``red`` have the red square in it."""
    root.mkdir(parents=True)
    lines = [json.dumps({"classes": ["red", "green", "blue"]})]
    for i in range(n):
        img = np.full((32, 32, 3), 120, np.uint8)
        if i < red:
            img[8:16, 16:24] = (255, 0, 0)
        Image.fromarray(img).save(root / f"{i:03d}.png")
        lines.append(json.dumps({"image": f"{i:03d}.png", "label": "red", "boxes": [[16, 8, 24, 16]]}))
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    return root / "m.jsonl"


def test_97_constant_maps_of_100_fail_a_min_check_the_3_survivors_meet(tmp_path):
    data = _mostly_grey(tmp_path / "d")
    kw = dict(model=RedOnlyCNN(), methods=["gradcam"], fail_under=["gradcam.pointing_game=0.8"])
    res = run_audit(data, out=tmp_path / "strict", **kw)
    pg = res.summary["gradcam"]["pointing_game"]
    assert (pg.mean, pg.n, pg.n_nan) == (1.0, 3, 97)  # the survivors are perfect ...
    (v, _) = res.verdicts
    assert not res.passed and not v["passed"]  # ... but 97 images gave no evidence
    assert "97 of 100 scored image(s) gave no valid pointing_game" in v["reason"]
    res = run_audit(data, out=tmp_path / "allowed", max_nan=97, **kw)
    (v, _) = res.verdicts
    assert res.passed and v["passed"] and "97 without a valid map allowed by --max-nan 97" in v["reason"]
    cli = ["run", "--data", str(data), "--model", "test_gate:RedOnlyCNN", "--methods", "gradcam", "--no-report",
           "--fail-under", "gradcam.pointing_game=0.8"]
    r = CliRunner().invoke(main, cli + ["--out", str(tmp_path / "cli")])
    assert r.exit_code == 1 and "97 of 100 scored image(s) gave no valid pointing_game" in r.output
    r = CliRunner().invoke(main, cli + ["--out", str(tmp_path / "cli2"), "--max-nan", "97"])
    assert r.exit_code == 0, r.output


def test_gate_on_ci_uses_the_safe_bound():
    summary = {"m": {"relevance_mass": {"mean": 0.82, "ci_low": 0.70, "ci_high": 0.90, "n": 50, "n_nan": 0}}}
    check = parse_assignment("m.relevance_mass=0.8", "min")
    (mean_v, _) = evaluate([check], summary, None, options=GateOptions())
    (ci_v, _) = evaluate([check], summary, None, options=GateOptions(gate_on="ci"))
    assert mean_v.passed and mean_v.value == 0.82
    assert not ci_v.passed and ci_v.value == 0.70 and "CI lower bound 0.7000" in ci_v.reason


# -- error rows and empty audits --------------------------------------------------------

def test_six_broken_records_of_seven_fail_the_audit_and_say_why(tmp_path):
    data = write_square_set(tmp_path / "d", n=1, extra_lines=[
        json.dumps({"image": f"gone{i}.png", "label": "red", "boxes": [[0, 0, 4, 4]]}) for i in range(6)])
    (tmp_path / "toy.py").write_text("import sys\nsys.path.insert(0, %r)\nfrom test_run import _vit\n"
                                     "def build():\n    return _vit()\n" % str(__import__("pathlib").Path(__file__).parent))
    args = ["run", "--data", str(data), "--model", "toy:build", "--methods", "gradcam", "--no-report"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        r = CliRunner().invoke(main, args + ["--out", "o"])
        assert r.exit_code == 1, r.output
        assert "FAIL  errors.error_rows <= 0  (6 image(s) could not be audited" in r.output
        assert "gone0.png: Image not found" in r.output and r.output.rstrip().endswith("o/results.json")
        suite = ET.parse(tmp_path / "o" / "junit.xml").getroot().find("testsuite")
        assert suite.find("testcase[@name='errors.error_rows <= 0']/failure") is not None
        r = CliRunner().invoke(main, args + ["--out", "o2", "--max-errors", "6"])
        assert r.exit_code == 0, r.output
        (tmp_path / "t.toml").write_text("[errors]\nmax = 6\n")
        r = CliRunner().invoke(main, args + ["--out", "o3", "--thresholds", "t.toml"])
        assert r.exit_code == 0, r.output


def test_a_data_set_with_nothing_to_score_is_a_usage_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "folders" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "folders" / cls / "x.png")
    r = CliRunner().invoke(main, ["run", "--data", str(tmp_path / "folders"), "--checkpoint", "demo:clean",
                                  "--class-map", str(_csv(tmp_path, "a,0\nb,1\n")), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Nothing to score" in r.output and "auditor visualize" in r.output
    assert not (tmp_path / "o").exists()


def _csv(tmp_path, text):
    (tmp_path / "map.csv").write_text(text)
    return tmp_path / "map.csv"


# -- validation before any work ---------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--fail-under", "gradcam.pointing=0.8"], "unknown metric 'pointing' (did you mean 'pointing_game'?)"),
    (["--fail-under", "gradcam.pointing_game=80"], "80 is outside pointing_game's range [0, 1]; did you mean 0.8?"),
    (["--fail-under", "gradcm.pointing_game=0.8"], "unknown method 'gradcm' (did you mean 'gradcam'?)"),
    (["--fail-under", "rollout.pointing_game=0.5"], "rollout does not apply here"),
    (["--fail-under", "gradcam.kl_div=0.5"], "cannot measure kl_div"),
    (["--max-drop", "gradcam.pointing_game=0.1"], "needs a baseline run"),
])
def test_threshold_mistakes_exit_2_before_anything_is_written(tmp_path, extra, message):
    data = write_square_set(tmp_path / "d", n=2)
    (tmp_path / "toml").write_text("[gradcam.pointing_game.per_class]\nred = { min = 0.5 }\n")
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--model", "test_run:CornerCNN",
                                  "--methods", "gradcam,rollout", "--out", str(tmp_path / "o"), *extra])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()  # nothing blocks the retry


def test_a_per_class_check_on_a_class_the_data_lacks_exits_2(tmp_path):
    data = write_square_set(tmp_path / "d", n=2)
    (tmp_path / "t.toml").write_text("[gradcam.pointing_game.per_class]\nredd = { min = 0.5 }\n")
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--model", "test_run:CornerCNN", "--methods", "gradcam",
                                  "--thresholds", str(tmp_path / "t.toml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no class 'redd' (did you mean 'red'?)" in r.output


# -- classes by name --------------------------------------------------------------------

def _shapes(tmp_path, classes, labels):
    from auditor.datasets.synthetic import write_dataset

    manifest = write_dataset(tmp_path / "syn", len(labels), gaze_maps=False)
    lines = manifest.read_text().splitlines()
    recs = [json.loads(x) for x in lines[1:]]
    for rec, label in zip(recs, labels):
        rec["label"] = label
    out = tmp_path / "syn" / "reordered.jsonl"
    out.write_text("\n".join([json.dumps({"classes": classes})] + [json.dumps(r) for r in recs]) + "\n")
    return out


def test_a_manifest_in_another_class_order_targets_the_models_index_of_each_name(tmp_path):
    data = _shapes(tmp_path, ["cross", "triangle", "disc", "square"], ["cross", "disc", "square", "triangle"])
    res = run_audit(data, out=tmp_path / "o", checkpoint="demo:clean", methods=["gradcam"])
    # demo:clean's head: disc 0, square 1, triangle 2, cross 3 (models/demo_clean/config.json)
    assert [(r["label_name"], r["target"], r["target_name"]) for r in res.rows] == [
        ("cross", 3, "cross"), ("disc", 0, "disc"), ("square", 1, "square"), ("triangle", 2, "triangle")]
    assert res.data["settings"]["models"][0]["classes"] == ["disc", "square", "triangle", "cross"]
    assert res.data["settings"]["target_detail"]["class_map"]["mapping"]["cross"] == {"index": 3, "name": "cross"}


def test_predictions_carry_the_models_class_names(tmp_path):
    data = _shapes(tmp_path, ["zebra", "disc"], ["disc", "disc"])
    res = run_audit(data, out=tmp_path / "o", checkpoint="demo:clean", methods=["gradcam"], target="predicted")
    for r in res.rows:
        assert r["prediction_name"] == ["disc", "square", "triangle", "cross"][r["prediction"]]
        assert r["target"] == r["prediction"] and r["target_name"] == r["prediction_name"]


def test_an_imagenet_head_maps_names_synonyms_and_wordnet_ids(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "x.png")
    names = ["space shuttle", "Egyptian_cat", "tabby cat", "n03773504"]  # 812, 285, 281 (synonym), 657 (missile)
    lines = [json.dumps({"classes": names})] + [json.dumps({"image": "x.png", "id": f"x{i}", "label": n,
                                                            "boxes": [[0, 0, 20, 20]]}) for i, n in enumerate(names)]
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0")  # a 1000-class head without names: ImageNet-1k order
    res = run_audit(root / "m.jsonl", out=tmp_path / "o", model=model, methods=["gradcam"], image_size=64)
    assert [r["target"] for r in res.rows] == [812, 285, 281, 657]
    assert res.rows[2]["target_name"] == "tabby" and "ImageNet-1k" in res.data["settings"]["target_detail"]["reason"]


def test_a_class_the_model_lacks_names_it_and_the_models_classes(tmp_path):
    data = _shapes(tmp_path, ["rocket", "disc"], ["rocket", "disc"])
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--checkpoint", "demo:clean", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "class 'rocket' maps to no class of the model" in r.output
    assert "disc (0), square (1), triangle (2), cross (3)" in r.output and "--class-map" in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--checkpoint", "demo:clean", "--out", str(tmp_path / "o"),
                                  "--class-map", str(_csv(tmp_path, "name,index\nrocket,2\ndisc,0\n")), "--no-report",
                                  "--methods", "gradcam"])
    assert r.exit_code in (0, 1), r.output
    rows = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert [x["target"] for x in rows] == [2, 0]


def test_a_model_without_names_and_named_classes_needs_a_class_map(tmp_path):
    data = write_square_set(tmp_path / "d", n=2)
    (tmp_path / "anon.py").write_text("import sys\nsys.path.insert(0, %r)\nfrom test_run import CornerCNN\n"
                                      "def build():\n    m = CornerCNN()\n    m.class_names = None\n    return m\n"
                                      % str(__import__("pathlib").Path(__file__).parent))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        r = CliRunner().invoke(main, ["run", "--data", str(data), "--model", "anon:build", "--out", "o"])
        assert r.exit_code == 2 and "does not name its 3 outputs" in r.output and "--class-map" in r.output
        (tmp_path / "m.json").write_text('{"red": 0}')
        r = CliRunner().invoke(main, ["run", "--data", str(data), "--model", "anon:build", "--out", "o",
                                      "--class-map", "m.json", "--methods", "gradcam", "--image-size", "32"])
        assert r.exit_code == 0, r.output


def test_records_without_a_label_are_error_rows_not_the_predicted_class(tmp_path):
    data = write_square_set(tmp_path / "d", n=2, extra_lines=[json.dumps({"image": "img000.png", "id": "nolabel",
                                                                          "boxes": [[0, 0, 16, 16]]})])
    from test_run import _vit

    res = run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam"], max_errors=1)
    row = next(r for r in res.rows if r["id"] == "nolabel")
    assert row["target"] is None and "has no label" in row["error"] and "--target predicted" in row["error"]
    assert res.data["settings"]["target"] == "label"


# -- paired comparisons -----------------------------------------------------------------

def _edit(results, fn):
    doc = json.loads(results.read_text())
    fn(doc)
    results.write_text(json.dumps(doc))
    return results


def test_a_compare_whose_unpaired_mean_rises_but_paired_delta_drops_fails(tmp_path):
    a = make_audit(tmp_path / "a", n=10, errors=False)
    b = make_audit(tmp_path / "b", n=10, errors=False)
    pg_a = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # A: mean 0.5
    pg_b = [None] * 5 + [1, 1, 1, 1, 0]  # B: no map on A's misses, mean of the rest 0.8; paired: 1.0 -> 0.8

    def put(values, blank):
        def fn(doc):
            for row, v in zip(doc["rows"], values):
                row["metrics"]["gradcam"]["pointing_game"] = v
                if v is None and blank:
                    row["map_status"]["gradcam"] = "the map is constant"
        return fn

    _edit(a, put(pg_a, False))
    _edit(b, put(pg_b, True))
    comp = compare_results(a, b, out=tmp_path / "c", max_drop=["gradcam.pointing_game=0.05"], max_nan=5)
    (v, _) = comp.data["verdicts"]
    assert not comp.passed and not v["passed"]
    assert v["value"] == pytest.approx(0.2) and "paired over n=5" in v["reason"]
    d = comp.data["deltas"]["gradcam"]["pointing_game"]
    assert d["n"] == 5 and d["delta"] == pytest.approx(-v["value"])  # the table and the gate agree
    comp = compare_results(a, b, out=tmp_path / "c2", max_drop=["gradcam.pointing_game=0.05"])
    assert "5 image(s) the baseline scored gave no valid pointing_game" in comp.data["verdicts"][0]["reason"]
    r = CliRunner().invoke(main, ["compare", "--results-a", str(a), "--results-b", str(b), "--out", str(tmp_path / "c3"),
                                  "--max-drop", "gradcam.pointing_game=0.05", "--max-nan", "5"])
    assert r.exit_code == 1 and "FAIL  gradcam.pointing_game drop <= 0.05  (paired over n=5" in r.output


def test_compare_refuses_different_data_unless_allowed(tmp_path):
    a = make_audit(tmp_path / "a", n=6, errors=False)
    b = make_audit(tmp_path / "b", n=7, errors=False)
    args = ["compare", "--results-a", str(a), "--results-b", str(b), "--out", str(tmp_path / "c")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "differ in the data (6 vs 7 records" in r.output and "--allow-different-data" in r.output
    r = CliRunner().invoke(main, args + ["--allow-different-data"])
    assert r.exit_code == 0, r.output
    assert "6 images scored by both; 0 only by A, 1 only by B" in r.output


def test_compare_console_shows_n_and_the_interval(tmp_path):
    a = make_audit(tmp_path / "a", n=6, errors=False)
    r = CliRunner().invoke(main, ["compare", "--results-a", str(a), "--results-b", str(a), "--out", str(tmp_path / "c"),
                                  "--fail-under", "gradcam.pointing_game=0.5"])
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if line.startswith("method.metric"))
    assert " n " in header and "delta (95% CI)" in header and "±" not in r.output
    assert "PASS  gradcam.pointing_game >= 0.5" in r.output


def test_baseline_on_other_data_is_refused(tmp_path):
    from test_run import _vit

    first = write_square_set(tmp_path / "d1", n=3)
    other = write_square_set(tmp_path / "d2", n=4, seed=1)
    run_audit(first, out=tmp_path / "a", model=_vit(), methods=["gradcam"])
    r = CliRunner().invoke(main, ["run", "--data", str(other), "--model", "test_run:_vit", "--methods", "gradcam",
                                  "--baseline", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b"),
                                  "--max-drop", "gradcam.pointing_game=0.1"])
    assert r.exit_code == 2 and "differ in the data (3 vs 4 records" in r.output
    assert not (tmp_path / "b").exists()


def test_few_shot_paired_drops_resample_episodes_and_images_not_rows():
    from auditor.metrics.stats import cluster_bootstrap_ci, paired_bootstrap_ci

    # 3 episodes of 4 queries; within an episode B loses the same amount: rows are not independent
    loss = {0: 0.0, 1: 0.5, 2: 1.0}
    base = [{"id": f"ep{e}/q{i}", "episode": e, "record_id": f"q{e}{i}", "error": None,
             "metrics": {"m": {"relevance_mass": 1.0}}} for e in range(3) for i in range(4)]
    now = [{**r, "metrics": {"m": {"relevance_mass": 1.0 - loss[r["episode"]]}}} for r in base]
    check = parse_assignment("m.relevance_mass=0.9", "max_drop")
    (v, _) = evaluate([check], {}, None, options=GateOptions(), rows=now, baseline_rows=base)
    drops = np.array([loss[r["episode"]] for r in base])
    clustered = cluster_bootstrap_ci(drops, [r["episode"] for r in base], [r["record_id"] for r in base])
    by_row = paired_bootstrap_ci(np.zeros(12), drops)
    assert v.value == pytest.approx(0.5)
    assert f"95% CI {clustered.ci_low:.4f}-{clustered.ci_high:.4f}" in v.reason
    assert clustered.ci_high - clustered.ci_low > 1.5 * (by_row.ci_high - by_row.ci_low)  # the episode spread shows


def test_the_gates_drop_and_the_shown_delta_share_one_interval_whatever_the_row_order(tmp_path):
    a = make_audit(tmp_path / "a", n=12, errors=False)
    b = make_audit(tmp_path / "b", n=12, errors=False, corner=True)
    def vary_and_reverse(doc):  # per-image drops that differ, and B lists its images in another order than A
        for i, row in enumerate(doc["rows"]):
            row["metrics"]["gradcam"]["relevance_mass"] = (i * 7 % 12) / 12
        doc["rows"].reverse()

    _edit(b, vary_and_reverse)
    comp = compare_results(a, b, out=tmp_path / "c", max_drop=["gradcam.relevance_mass=0.01"], gate_on="ci")
    d = comp.data["deltas"]["gradcam"]["relevance_mass"]
    (v, _) = comp.data["verdicts"]
    assert f"drop {-d['delta']:.4f} (95% CI {-d['ci_high']:.4f}-{-d['ci_low']:.4f})" in v["reason"]
    assert v["value"] == pytest.approx(-d["ci_low"])  # judged on the bound the table shows


# -- signed errors: integrated gradients' completeness error ----------------------------------

def _ig_rows(*errors):
    return [{"id": str(i), "label_name": "cat" if i % 2 else "dog",
             "metrics": {"integrated_gradients": {} if e is None else {"completeness_error": e}}}
            for i, e in enumerate(errors)]


def test_completeness_error_is_gated_on_its_largest_absolute_value():
    rows = _ig_rows(0.01, -0.04, 0.02, float("nan"))  # mean -0.0033 would pass any max; |-0.04| is the worst
    check = parse_assignment("integrated_gradients.completeness_error=0.03", "max")
    (v, _) = evaluate([check], {}, None, options=GateOptions(max_nan=1), rows=rows)
    assert not v.passed and v.value == 0.04 and "largest |completeness_error| 0.0400 over n=3 of 4" in v.reason
    (v, _) = evaluate([parse_assignment("integrated_gradients.completeness_error=0.05", "max")], {}, None,
                      options=GateOptions(max_nan=1), rows=rows)
    assert v.passed and v.value == 0.04
    (v, _) = evaluate([check], {}, None, options=GateOptions(), rows=rows)  # the NaN image counts against it
    assert not v.passed and "1 of 4 image(s) gave no valid completeness_error" in v.reason
    cat = Check("integrated_gradients", "completeness_error", "max", 0.03, "cat")  # rows 1, 3: -0.04 and NaN
    (v, _) = evaluate([cat], {}, None, options=GateOptions(max_nan=1), rows=rows[:3])
    assert not v.passed and v.value == 0.04 and "n=1 of 1" in v.reason
    (v, _) = evaluate([check], {}, None, options=GateOptions(), rows=[])
    assert not v.passed and "fails closed" in v.reason


@pytest.mark.parametrize("check, message", [
    (Check("integrated_gradients", "completeness_error", "min", 0.1), "takes one check, max = E"),
    (Check("integrated_gradients", "completeness_error", "max_drop", 0.1), "largest absolute value"),
    (Check("integrated_gradients", "completeness_error", "max", -0.1), "(E >= 0)"),
    (Check("gradcam", "completeness_error", "max", 0.1), "only integrated_gradients reports completeness_error"),
])
def test_completeness_error_checks_that_cannot_be_judged_are_refused(check, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        validate_checks([check], methods={"integrated_gradients": None, "gradcam": None}, metrics={"pointing_game"},
                        classes=[], has_baseline=True)
    validate_checks([Check("integrated_gradients", "completeness_error", "max", 0.1)],
                    methods={"integrated_gradients": None}, metrics={"pointing_game"}, classes=[], has_baseline=False)


def test_an_audit_gates_on_the_completeness_error(tmp_path):
    data = write_square_set(tmp_path / "d", n=2)
    args = ["run", "--data", str(data), "--model", "test_run:CornerCNN", "--image-size", "32", "--methods",
            "integrated_gradients",
            "--method-option", "integrated_gradients.n_steps=2", "--no-report"]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a"), "--thresholds", str(_toml(tmp_path, 1e6))])
    assert r.exit_code == 0, r.output
    rows = AuditResult.load(tmp_path / "a" / "results.json").rows
    worst = max(abs(r["metrics"]["integrated_gradients"]["completeness_error"]) for r in rows)
    assert worst > 0
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b"), "--thresholds", str(_toml(tmp_path, worst / 2))])
    assert r.exit_code == 1 and f"largest |completeness_error| {worst:.4f}" in r.output, r.output


def _toml(tmp_path, limit):
    path = tmp_path / f"t{limit:g}.toml"
    path.write_text(f"[integrated_gradients.completeness_error]\nmax = {limit!r}\n")
    return path
