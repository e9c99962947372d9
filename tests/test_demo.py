"""The offline demo: bundled checkpoints, a reduced demo set, the shortcut model caught."""

from __future__ import annotations

import json

from click.testing import CliRunner

from auditor.cli import main
from auditor.models import build_model
from auditor.resources import bundled_models


def test_bundled_checkpoints_load_by_name_with_their_config():
    assert {"clean", "shortcut"} <= set(bundled_models())
    loaded = build_model(checkpoint="demo:clean")
    assert loaded.name == "vit_tiny (demo:clean)"
    assert loaded.model.num_classes == 4 and loaded.model.default_cfg["mean"] == (0.5, 0.5, 0.5)
    assert loaded.checkpoint.sha256


def test_demo_catches_the_shortcut_model(tmp_path):
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "-n", "24"])
    assert r.exit_code == 0, r.output
    assert "The shortcut model FAILS the gate" in r.output
    assert (tmp_path / "demo" / "report.html").is_file()
    comp = json.loads((tmp_path / "demo" / "comparison.json").read_text())
    a = json.loads((tmp_path / "demo" / "a" / "results.json").read_text())["summary"]
    b = json.loads((tmp_path / "demo" / "b" / "results.json").read_text())["summary"]
    # the clean model's attention finds the object well above the centre baseline; the shortcut model's does not
    assert a["rollout"]["pointing_game"]["mean"] > a["centre"]["pointing_game"]["mean"] + 0.1
    assert b["rollout"]["pointing_game"]["mean"] < a["centre"]["pointing_game"]["mean"] - 0.1
    failed = [v for v in comp["verdicts"] if not v["passed"]]
    assert failed and failed[0]["name"].startswith("rollout.pointing_game")


def test_a_bundled_checkpoint_needs_no_arch_on_the_command_line(tmp_path, monkeypatch):
    from auditor.datasets.synthetic import SyntheticConfig, write_dataset

    manifest = write_dataset(tmp_path / "data", 4, cfg=SyntheticConfig(size=64))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["run", "--data", str(manifest), "--checkpoint", "demo:clean", "--out", "o",
                                  "--methods", "rollout", "--no-report"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["settings"]["models"][0]["name"].startswith("vit_tiny")
    r = CliRunner().invoke(main, ["run", "--data", str(manifest), "--out", "o2"])
    assert r.exit_code == 2 and "demo:NAME" in r.output


def test_compare_bundled_checkpoints_without_arch(tmp_path, monkeypatch):
    from auditor.datasets.synthetic import SyntheticConfig, write_dataset

    manifest = write_dataset(tmp_path / "data", 6, cfg=SyntheticConfig(size=64, shortcut="consistent"))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["compare", "--data", str(manifest), "--checkpoint-a", "demo:clean",
                                  "--checkpoint-b", "demo:shortcut", "--out", "cmp", "--methods", "rollout",
                                  "--max-drop", "rollout.pointing_game=0.1"])
    assert r.exit_code == 1, r.output  # the shortcut model's rollout misses the objects: the gate fails
    assert "FAIL  rollout.pointing_game drop <= 0.1" in r.output
