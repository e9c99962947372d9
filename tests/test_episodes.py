"""`auditor run --episodes`: each query is explained against its own episode's support set."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from auditor.cli import main
from auditor.data import load_dataset, sample_episodes
from auditor.episodes import EpisodeOptions
from auditor.methods import compute_maps, create_method
from auditor.models import create_model
from auditor.results import schema_path
from auditor.runner import run_audit
from auditor.savers import load_maps
from auditor.visualize import input_preprocess

from conftest import colour_vit

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
OPTS = EpisodeOptions(n_way=3, k_shot=2, n_query=2, episodes=3, seed=0)


def write_colour_set(root, per_class=6, seed=0):
    """Grey-noise 64 px images with one 16 px square of the class colour; manifest.jsonl with its box."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"classes": list(COLOURS)})]
    for name, colour in COLOURS.items():
        for i in range(per_class):
            img = np.repeat((rng.random((64, 64, 1)) * 128).astype(np.uint8), 3, axis=2)
            y0, x0 = (int(v) * 16 for v in rng.integers(0, 4, 2))
            img[y0:y0 + 16, x0:x0 + 16] = colour
            Image.fromarray(img).save(root / f"{name}{i}.png")
            lines.append(json.dumps({"image": f"{name}{i}.png", "label": name, "boxes": [[x0, y0, x0 + 16, y0 + 16]]}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"


def colour_backbone() -> nn.Module:
    """colour_vit without its head: a patch token is the patch's mean colour, so the mean patch
    token of an image with a red square is nearest the red images' prototype -- by construction."""
    m = colour_vit()
    m.head, m.num_classes = nn.Identity(), 0
    m.default_cfg = {"input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)}
    return m


@pytest.fixture
def colours(tmp_path):
    return write_colour_set(tmp_path / "data")


def test_each_query_uses_its_episodes_support_set(colours, tmp_path):
    model = colour_backbone()
    res = run_audit(colours, out=tmp_path / "out", model=model, episodes=OPTS)
    rows = list(res.rows)
    plan = sample_episodes(load_dataset(colours), n_way=3, k_shot=2, n_query=2, episodes=3, seed=0)
    assert [r["id"] for r in rows] == [f"ep{k}/{q.id}" for k, ep in enumerate(plan) for q in ep.query]
    pre = input_preprocess(model, None, None, None)
    maps = load_maps(tmp_path / "out" / "token_maps.npz")
    for r in rows:
        ep = plan[r["episode"]]
        support = [s for s in ep.support if s.label == r["label"]]
        assert r["support"] == [s.id for s in support] and r["id"].split("/", 1)[1] not in r["support"]
        assert r["target"] == r["label"] and r["error"] is None
        # the map the run saved is the one of this query against exactly this support set
        x = pre(np.array(Image.open(r["image"]).convert("RGB")))
        xs = torch.cat([pre(np.array(Image.open(s.image).convert("RGB"))) for s in support])
        direct = compute_maps(model, x, [create_method("reconstruction_attention")], support=xs)
        np.testing.assert_allclose(maps[f"reconstruction_attention/{r['id']}"],
                                   direct.maps["reconstruction_attention"].maps[0].numpy(), atol=1e-6)
    data = res.data
    assert data["settings"]["target"] == "fewture"
    assert "reconstruction_attention" not in data["settings"]["skipped_methods"]
    assert "reconstruction_attention" in data["summary"]
    jsonschema.validate(json.loads((tmp_path / "out" / "results.json").read_text()),
                        json.loads(schema_path().read_text()))


def test_nearest_prototype_accuracy_is_known_by_construction(colours, tmp_path):
    fs = run_audit(colours, out=tmp_path / "out", model=colour_backbone(), episodes=OPTS, report=True,
                   target="prototype").data["few_shot"]
    assert fs["accuracy"]["mean"] == 1.0 and fs["accuracy"]["n"] == 3
    html = (tmp_path / "out" / "report.html").read_text()
    assert "3-way 2-shot, 2 queries per class, seed 0: accuracy (nearest prototype) 1.000" in html
    assert "episode 0, support: " in html and "references are not drawn" not in html
    assert html.count('alt="support image ') == 18 * 2 and "(cosine 1.00)" in html  # 2 support thumbnails a card
    assert [e["queries"] for e in fs["per_episode"]] == [6, 6, 6]
    assert sorted(fs["per_episode"][0]["classes"]) == sorted(COLOURS)

    # a backbone blind to colour gives every image the same tokens: all prototypes tie, the
    # first of the episode's classes wins, and accuracy is exactly 1/3 in every episode
    model = colour_backbone()
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
    fs = run_audit(colours, out=tmp_path / "blind", model=model, episodes=OPTS, target="prototype").data["few_shot"]
    assert [e["accuracy"] for e in fs["per_episode"]] == pytest.approx([1 / 3] * 3)


def test_episodes_are_seeded(colours, tmp_path):
    a = run_audit(colours, out=tmp_path / "a", model=colour_backbone(), episodes=OPTS)
    b = run_audit(colours, out=tmp_path / "b", model=colour_backbone(), episodes=OPTS)
    c = run_audit(colours, out=tmp_path / "c", model=colour_backbone(),
                  episodes=EpisodeOptions(3, 2, 2, 3, seed=1), seed=1)
    ids = lambda r: [row["id"] for row in r.rows]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_bad_support_images_are_left_out_and_named(colours, tmp_path):
    plan = sample_episodes(load_dataset(colours), n_way=3, k_shot=2, n_query=2, episodes=3, seed=0)
    red = [s for s in plan[0].support if s.label == 0]
    red[0].image.write_bytes(b"not a png")  # one red support image of episode 0 is corrupt
    res = run_audit(colours, out=tmp_path / "out", model=colour_backbone(), episodes=OPTS)
    rows = [r for r in res.rows if r["episode"] == 0 and r["label"] == 0]
    assert rows and all(r["error"] is None and r["support"] == [red[1].id] for r in rows)
    assert all(red[0].id in r["support_errors"][0] for r in rows)

    red[1].image.write_bytes(b"")  # now no red support image of episode 0 can be read
    res = run_audit(colours, out=tmp_path / "out2", model=colour_backbone(), episodes=OPTS)
    rows0 = [r for r in res.rows if r["episode"] == 0]
    bad = [r for r in rows0 if r["label"] == 0]
    assert bad and all("no support image of class 'red'" in r["error"] for r in bad)
    assert all(r["error"] is None for r in rows0 if r["label"] != 0)  # the other classes are still scored
    # but without a red prototype the episode is no 3-way decision: no predictions, no accuracy
    assert all(r["prediction"] is None for r in rows0)
    assert res.data["few_shot"]["per_episode"][0]["accuracy"] is None
    assert res.data["few_shot"]["accuracy"]["n"] == 2


def test_a_class_whose_queries_all_fail_still_competes(colours, tmp_path):
    plan = sample_episodes(load_dataset(colours), n_way=3, k_shot=2, n_query=2, episodes=3, seed=0)
    first = plan[0].classes[0]
    for q in plan[0].query:
        if q.label == first:
            q.image.write_bytes(b"broken")
    model = colour_backbone()  # blind to colour: every prototype ties, and the first class listed wins
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
    rows0 = [r for r in run_audit(colours, out=tmp_path / "out", model=model, episodes=OPTS).rows if r["episode"] == 0]
    scored = [r for r in rows0 if r["error"] is None]
    assert len(scored) == 4 and all(r["prediction"] == first for r in scored)  # its prototype came from its support


def test_an_interrupted_episode_run_resumes_to_the_same_results(colours, tmp_path, monkeypatch):
    import auditor.units as units_mod

    whole = run_audit(colours, out=tmp_path / "whole", model=colour_backbone(), episodes=OPTS)
    real, calls = units_mod.process_episode, []

    def dies_in_episode_2(k, *a, **kw):
        calls.append(k)
        if k == 2:
            raise KeyboardInterrupt
        return real(k, *a, **kw)

    monkeypatch.setattr(units_mod, "process_episode", dies_in_episode_2)
    with pytest.raises(KeyboardInterrupt):
        run_audit(colours, out=tmp_path / "cut", model=colour_backbone(), episodes=OPTS)
    calls.clear()
    monkeypatch.setattr(units_mod, "process_episode", lambda k, *a, **kw: calls.append(k) or real(k, *a, **kw))
    resumed = run_audit(colours, out=tmp_path / "cut", model=colour_backbone(), episodes=OPTS, resume=True)
    assert calls == [2]  # episodes 0 and 1 were kept
    strip = lambda d: {k: v for k, v in d.items() if k not in ("timing", "rows")}  # noqa: E731
    assert json.dumps(strip(resumed.data), sort_keys=True) == json.dumps(strip(whole.data), sort_keys=True)
    assert list(resumed.rows) == list(whole.rows)
    a, b = load_maps(tmp_path / "whole" / "token_maps.npz"), load_maps(tmp_path / "cut" / "token_maps.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_mab_checkpoint_in_fewture_folders_from_the_cli(tmp_path, monkeypatch):
    root = tmp_path / "fewture"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(root / split / name / f"{i}.jpg")
    torch.manual_seed(0)
    model = create_model("vit_tiny", embed_dim=48, depth=2, num_heads=3, image_size=64, patch_size=16,
                         use_mab=True, use_drff=True, window_size=2)
    torch.save({"params": model.state_dict(), "val_acc": np.float64(0.5)}, tmp_path / "best.pth")
    monkeypatch.chdir(tmp_path)
    args = ["run", "--data", "fewture", "--split", "test", "--checkpoint", "best.pth", "--arch", "vit_tiny",
            "--embed-dim", "48", "--depth", "2", "--num-heads", "3", "--image-size", "64", "--patch-size", "16",
            "--use_mab", "True", "--use_drff", "yes", "--window-size", "2", "--no-report",
            "--episodes", "2", "--n-way", "2", "--k-shot", "1", "--n-query", "2"]
    r = CliRunner().invoke(main, args + ["--out", "out"])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "out" / "results.json").read_text())
    assert d["settings"]["split"] == "test" and all(Path(r["image"]).parts[-3] == "test" for r in d["rows"])
    skipped = d["settings"]["skipped_methods"]
    assert "cls token bypasses" in skipped["cls_attention"].lower() and "reconstruction_attention" not in skipped
    maps = load_maps(tmp_path / "out" / "token_maps.npz")
    for m in ("window_attention", "channel_attention", "reconstruction_attention", "gradcam"):
        assert len([k for k in maps if k.startswith(m + "/")]) == 8, m
    r = CliRunner().invoke(main, [a if a != "True" else "False" for a in args] + ["--out", "o2"])
    assert r.exit_code == 2 and "use_mab" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("kwargs, fragment", [
    ({"target": "prototype"}, "needs few-shot episodes"),
    ({"episodes": EpisodeOptions(3, 5, 2, 1)}, "need 7 images per class"),
    ({"episodes": OPTS, "faithfulness": "deletion"}, "--faithfulness does not run with --episodes"),
    ({"episodes": OPTS, "target": "predicted"}, "--target predicted is not available with --episodes"),
])
def test_bad_episode_settings_are_explained(colours, tmp_path, kwargs, fragment):
    from auditor.errors import AuditorError

    with pytest.raises(AuditorError, match=fragment.replace("-", r"\-")):
        run_audit(colours, out=tmp_path / "out", model=colour_backbone(), **kwargs)


def test_cli_episodes_on_a_checkpoint(colours, tmp_path, monkeypatch):
    save_file({k: v.contiguous() for k, v in colour_backbone().state_dict().items()}, tmp_path / "bb.safetensors")
    monkeypatch.chdir(tmp_path)
    args = ["run", "--data", str(colours), "--checkpoint", "bb.safetensors", "--arch", "vit_small", "--embed-dim", "4",
            "--depth", "1", "--num-heads", "1", "--image-size", "32", "--patch-size", "8", "--mean", "0,0,0",
            "--std", "1,1,1", "--no-report"]
    r = CliRunner().invoke(main, args + ["--out", "o", "--episodes", "3", "--n-way", "3", "--k-shot", "2",
                                         "--n-query", "2", "--seed", "0"])
    assert r.exit_code == 0, r.output
    assert "3-way 2-shot accuracy (fewture) over 3 episode(s): 1.000" in r.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["counts"]["images"] == 18
    r = CliRunner().invoke(main, args + ["--out", "o2", "--episodes", "1", "--n-way", "3", "--n-query", "12"])
    assert r.exit_code == 2 and "need 17 images per class" in r.output and "--n-query" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, args + ["--out", "o3", "--n-way", "3"])  # no --episodes: not silently ignored
    assert r.exit_code == 2 and "--n-way only apply to few-shot episodes: add --episodes N" in r.output
    r = CliRunner().invoke(main, args + ["--out", "o4", "--engine", "local", "--workers", "4"])
    assert r.exit_code == 2 and "--engine local has none" in r.output


def test_a_class_head_decides_among_the_episodes_classes_only(colours, tmp_path):
    model = colour_vit()
    model.default_cfg = {"input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)}
    with torch.no_grad():  # the head now calls red "green", green "blue", blue "red"
        model.head.weight.copy_(model.head.weight[[2, 0, 1]].clone())
    opts = EpisodeOptions(n_way=2, k_shot=2, n_query=2, episodes=6, seed=0)
    res = run_audit(colours, out=tmp_path / "out", model=model, episodes=opts, target="label")
    plan = sample_episodes(load_dataset(colours), n_way=2, k_shot=2, n_query=2, episodes=6, seed=0)
    for r in res.rows:
        classes = plan[r["episode"]].classes
        assert r["prediction"] in classes and r["prediction_score"] >= 0.5  # renormalised over the 2 classes
        wrong = (r["label"] + 1) % 3  # the class the head names
        assert (r["prediction"] == wrong) == (wrong in classes)  # never a class outside the episode
    assert any((r["label"] + 1) % 3 not in plan[r["episode"]].classes for r in res.rows)  # the restriction mattered


def test_a_model_with_a_class_head_can_explain_its_logits_within_episodes(colours, tmp_path):
    model = colour_vit()  # logit k = amount of colour k: the head is right on every image
    model.default_cfg = {"input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)}
    res = run_audit(colours, out=tmp_path / "out", model=model, episodes=OPTS, target="label")
    assert res.data["settings"]["target"] == "label"
    assert res.data["few_shot"]["decision"] == "class head" and res.data["few_shot"]["accuracy"]["mean"] == 1.0
    assert all(r["target"] == r["label"] and 0 < r["prediction_score"] <= 1 for r in res.rows)  # softmax, not cosine
    assert "reconstruction_attention" in res.data["summary"]  # the support set is still used
    from auditor.report import render_report

    html = render_report(res).read_text()
    assert "the prediction is the head's, among the episode's classes" in html and "nearest prototype among" not in html
    assert run_audit(colours, out=tmp_path / "fewture", model=model, episodes=OPTS).data["few_shot"]["decision"] == "fewture"
    fs = run_audit(colours, out=tmp_path / "proto", model=model, episodes=OPTS, target="prototype").data["few_shot"]
    assert fs["decision"] == "nearest prototype"


def test_compare_two_few_shot_backbones_on_the_same_episodes(colours, tmp_path, monkeypatch, request):
    (tmp_path / "fewshot_toys.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nimport torch\nfrom test_episodes import colour_backbone\n"
        "def good():\n    return colour_backbone()\n"
        "def blind():\n    m = colour_backbone()\n    with torch.no_grad():\n        m.patch_embed.proj.weight.zero_()\n"
        "    return m\n" % str(Path(__file__).parent))
    monkeypatch.chdir(tmp_path)
    request.addfinalizer(lambda: __import__("sys").modules.pop("fewshot_toys", None))  # no module left behind
    r = CliRunner().invoke(main, [
        "compare", "--data", str(colours), "--model-a", "fewshot_toys:good", "--model-b", "fewshot_toys:blind", "--out", "cmp",
        "--episodes", "3", "--n-way", "3", "--k-shot", "2", "--n-query", "2", "--methods", "gradcam,rollout"])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert d["counts"]["paired"] == 18  # the same 3 episodes for both models: every query pairs up
    assert d["a"]["few_shot_accuracy"]["mean"] == 1.0
    assert d["b"]["few_shot_accuracy"]["mean"] == pytest.approx(1 / 3)
    assert "few-shot accuracy: A 1.000 [1.000, 1.000], B 0.333" in r.output
    r = CliRunner().invoke(main, ["compare", "--results-a", "cmp/a/results.json", "--results-b", "cmp/b/results.json",
                                  "--out", "cmp2", "--episodes", "3"])
    assert r.exit_code == 2 and "not to finished results" in r.output


def test_fewture_decides_by_default_with_the_checkpoints_temperature(colours, tmp_path, monkeypatch):
    """--episodes: FewTURE's classifier decides and is explained; temp_sim comes from the checkpoint
    (as the fork's training saves it); --peiv is recorded and part of the resume fingerprint."""
    torch.save({"params": colour_backbone().state_dict(), "temp_sim": np.float64(0.2)}, tmp_path / "meta_best.pth")
    monkeypatch.chdir(tmp_path)
    args = ["run", "--data", str(colours), "--checkpoint", "meta_best.pth", "--arch", "vit_small", "--embed-dim", "4",
            "--depth", "1", "--num-heads", "1", "--image-size", "32", "--patch-size", "8", "--mean", "0,0,0",
            "--std", "1,1,1", "--no-report", "--methods", "gradcam", "--episodes", "3", "--n-way", "3", "--k-shot", "2",
            "--n-query", "2"]
    r = CliRunner().invoke(main, args + ["--out", "o"])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "o" / "results.json").read_text())
    fs = d["few_shot"]
    assert d["settings"]["target"] == "fewture" and fs["decision"] == "fewture" and fs["peiv"] is False
    assert fs["classifier"]["temperature"] == fs["temperature"] == 0.2
    assert fs["classifier"]["temperature_source"] == "checkpoint temp_sim" and fs["classifier"]["peiv"] is None
    assert fs["accuracy"]["mean"] == 1.0 and fs["accuracy"]["ci_method"].startswith("pigeonhole bootstrap")
    assert all(r["target"] == r["label"] and r["prediction"] == r["label"] and 1 / 3 < r["prediction_score"] <= 1
               for r in d["rows"])  # a probability over the episode's 3 classes
    jsonschema.validate(d, json.loads(schema_path().read_text()))

    (tmp_path / "o" / "results.json").unlink()  # as if interrupted: resuming it with --peiv is another run
    r = CliRunner().invoke(main, args + ["--out", "o", "--resume", "--peiv"])
    assert r.exit_code == 2 and "settings differ from this run's: episodes" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, args + ["--out", "p", "--peiv"])
    assert r.exit_code == 0, r.output
    fs = json.loads((tmp_path / "p" / "results.json").read_text())["few_shot"]
    assert fs["peiv"] is True and fs["classifier"]["peiv"] == {"steps": 15, "lr": 0.1, "block_mask_1shot": 5}


@pytest.mark.parametrize("extra, fragment", [
    (["--peiv"], "--peiv only apply to few-shot episodes"),
    (["--episodes", "1", "--n-way", "3", "--k-shot", "2", "--n-query", "2", "--peiv", "--target", "prototype"],
     "it applies to --target fewture"),
    (["--target", "fewture"], "it needs few-shot episodes"),
])
def test_bad_fewture_options_are_explained(colours, tmp_path, extra, fragment):
    r = CliRunner().invoke(main, ["run", "--data", str(colours), "--arch", "vit_small", "--embed-dim", "4", "--depth",
                                  "1", "--num-heads", "1", "--image-size", "32", "--patch-size", "8", "--no-report",
                                  "--out", str(tmp_path / "o")] + extra)
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output


def test_episode_summaries_resample_episodes_and_images(colours, tmp_path):
    from auditor.metrics.stats import cluster_bootstrap_ci

    res = run_audit(colours, out=tmp_path / "out", model=colour_backbone(), episodes=OPTS,
                    methods=["gradcam"])
    rows = [r for r in res.rows if not r["error"]]
    values = [r["metrics"]["gradcam"]["pointing_game"] for r in rows]
    expected = cluster_bootstrap_ci(values, [r["episode"] for r in rows], [r["record_id"] for r in rows]).to_dict()
    assert res.data["summary"]["gradcam"]["pointing_game"] == pytest.approx(expected, nan_ok=True)
    red = [r for r in rows if r["label_name"] == "red"]
    assert res.data["per_class"]["red"]["gradcam"]["pointing_game"] == pytest.approx(cluster_bootstrap_ci(
        [r["metrics"]["gradcam"]["pointing_game"] for r in red], [r["episode"] for r in red],
        [r["record_id"] for r in red]).to_dict(), nan_ok=True)

def test_per_layer_summaries_of_episode_rows_resample_episodes_and_images():
    from auditor.episodes import episode_summaries
    from auditor.metrics.stats import cluster_bootstrap_ci

    rows = [{"episode": e, "record_id": f"img{i}", "error": None, "label_name": "a",
             "per_layer": {"m": {"hit": [float(i % 2), float(e)], "never": [None, None]}}}
            for e in range(3) for i in range(e, e + 3)]
    got = episode_summaries(rows, seed=0, layers=True)
    assert list(got) == ["m"] and list(got["m"]) == ["hit"]  # a metric undefined at every layer is left out
    for layer in (0, 1):
        values = [r["per_layer"]["m"]["hit"][layer] for r in rows]
        assert got["m"]["hit"][layer] == cluster_bootstrap_ci(values, [r["episode"] for r in rows],
                                                              [r["record_id"] for r in rows]).to_dict()
    assert got["m"]["hit"][1]["mean"] == 1.0 and got["m"]["hit"][1]["ci_low"] < 1.0 < got["m"]["hit"][1]["ci_high"]
