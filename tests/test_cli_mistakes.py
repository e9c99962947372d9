"""A table of realistic mistakes over every command: each exits 2, prints no traceback, and its
message names the bad value (so the user sees what to fix without reading code).

Fast by construction: the models are the bundled demo checkpoints (``demo:clean``), the images
are tiny and generated, and every mistake is caught before an image is audited.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Paths the mistakes refer to: a tiny image and data set, a finished run, files and folders."""
    from auditor.datasets.synthetic import write_dataset
    from auditor.models import create_model
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("mistakes")
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(root / "img.png")
    manifest = write_dataset(root / "data", 4, seed=1)
    (root / "empty").mkdir()
    (root / "afile.txt").write_text("not a folder")
    (root / "notimage.png").write_text("not an image")
    (root / "notresults.json").write_text('{"hello": 1}')
    (root / "garbage.pth").write_text("garbage")
    (root / "ckpts").mkdir()
    save_file(create_model("vit_tiny", depth=1).state_dict(), root / "ckpts" / "vit_tiny_1.safetensors")
    r = CliRunner().invoke(main, ["run", "--data", str(manifest), "--checkpoint", "demo:clean", "--methods", "gradcam",
                                  "--out", str(root / "done"), "--no-report"])
    assert r.exit_code == 0, r.output
    return {"root": root, "img": root / "img.png", "data": manifest, "empty": root / "empty",
            "afile": root / "afile.txt", "notimage": root / "notimage.png", "notresults": root / "notresults.json",
            "garbage": root / "garbage.pth", "ckdir": root / "ckpts", "tinyckpt": root / "ckpts" / "vit_tiny_1.safetensors",
            "done": root / "done" / "results.json", "out": root / "new-out"}


V = ["visualize", "--image-path", "{img}"]
R = ["run", "--data", "{data}", "--checkpoint", "demo:clean", "--out", "{out}"]
C = ["compare", "--data", "{data}", "--checkpoint-a", "demo:clean"]
D = ["report", "{done}"]

#: (id, arguments, text the message must hold: the bad value)
MISTAKES = [
    # visualize: names, enums, numbers, files and folders
    ("vis-arch-typo", [*V, "--arch", "vit_smal"], "vit_smal"),
    ("vis-missing-image", ["visualize", "--image-path", "{root}/cat.jpg"], "cat.jpg"),
    ("vis-folder-as-image", ["visualize", "--image-path", "{empty}"], "{empty}"),
    ("vis-not-an-image", ["visualize", "--image-path", "{notimage}", "--checkpoint", "demo:clean"], "notimage.png"),
    ("vis-folder-as-checkpoint", [*V, "--checkpoint", "{ckdir}"], "{ckdir}"),
    ("vis-missing-checkpoint", [*V, "--model_path", "{root}/nope.pth"], "nope.pth"),
    ("vis-demo-typo", [*V, "--checkpoint", "demo:clen"], "demo:clen"),
    ("vis-garbage-checkpoint", [*V, "--checkpoint", "{garbage}"], "garbage.pth"),
    ("vis-checkpoint-of-another-arch", [*V, "--arch", "vit_small", "--checkpoint", "{tinyckpt}"], "vit_tiny_1.safetensors"),
    ("vis-image-size-vs-patch", [*V, "--arch", "vit_tiny", "--depth", "1", "--image_size", "225"], "225"),
    ("vis-image-size-vs-demo-patch", [*V, "--checkpoint", "demo:clean", "--image-size", "60"], "60"),
    ("vis-image-size-not-a-number", [*V, "--image_size", "big"], "big"),
    ("vis-patch-size-zero", [*V, "--patch_size", "0"], "0"),
    ("vis-colormap-typo", [*V, "--checkpoint", "demo:clean", "--colormap", "cividus"], "cividus"),
    ("vis-layer-out-of-range", [*V, "--checkpoint", "demo:clean", "--layer", "99"], "99"),
    ("vis-head-out-of-range", [*V, "--checkpoint", "demo:clean", "--head", "42"], "42"),
    ("vis-target-class-out-of-range", [*V, "--checkpoint", "demo:clean", "--target-class", "9"], "9"),
    ("vis-gradcam-layer-typo", [*V, "--checkpoint", "demo:clean", "--gradcam-layer", "blocks.99"], "blocks.99"),
    ("vis-alpha-range", [*V, "--alpha", "1.5"], "1.5"),
    ("vis-out-is-a-file", [*V, "--checkpoint", "demo:clean", "--output_dir", "{afile}"], "{afile}"),
    ("vis-out-under-a-file", [*V, "--checkpoint", "demo:clean", "--out", "{afile}/viz"], "{afile}"),
    ("vis-device-typo", [*V, "--device", "cdua"], "cdua"),
    ("vis-heads-vs-width", [*V, "--arch", "vit_tiny", "--embed-dim", "100", "--num-heads", "3"], "100"),
    ("vis-arch-and-model", [*V, "--arch", "vit_tiny", "--model", "pkg.nets:build"], "pkg.nets:build"),
    ("vis-factory-missing-module", [*V, "--model", "nosuchmodule:build"], "nosuchmodule"),
    ("vis-missing-support", [*V, "--checkpoint", "demo:clean", "--support", "{root}/s1.png"], "s1.png"),
    ("vis-demo-with-other-arch", [*V, "--checkpoint", "demo:clean", "--arch", "efficientnet_lite0"], "efficientnet_lite0"),
    # run
    ("run-method-typo", [*R, "--methods", "gradcma"], "gradcma"),
    ("run-target-typo", [*R, "--target", "lable"], "lable"),
    ("run-missing-data", ["run", "--data", "{root}/missing.jsonl", "--checkpoint", "demo:clean", "--out", "{out}"],
     "missing.jsonl"),
    ("run-empty-data-folder", ["run", "--data", "{empty}", "--checkpoint", "demo:clean", "--out", "{out}"], "{empty}"),
    ("run-image-as-data", ["run", "--data", "{img}", "--checkpoint", "demo:clean", "--out", "{out}"], "img.png"),
    ("run-batch-size-negative", [*R, "--batch-size", "-3"], "-3"),
    ("run-out-is-a-file", ["run", "--data", "{data}", "--checkpoint", "demo:clean", "--out", "{afile}"], "{afile}"),
    ("run-out-unwritable", ["run", "--data", "{data}", "--checkpoint", "demo:clean", "--out", "/proc/auditor-out"],
     "/proc/auditor-out"),
    ("run-mean-two-numbers", [*R, "--mean", "0.5,0.5"], "0.5,0.5"),
    ("run-faithfulness-typo", [*R, "--faithfulness", "delition"], "delition"),
    ("run-split-typo", [*R, "--split", "tset"], "tset"),
    ("run-n-way-without-episodes", [*R, "--n-way", "3"], "--n-way"),
    ("run-workers-with-local-engine", [*R, "--engine", "local", "--workers", "3"], "--workers"),
    ("run-engine-typo", [*R, "--engine", "spark"], "spark"),
    ("run-colormap-typo", [*R, "--colormap", "jett"], "jett"),
    ("run-device-unknown", [*R, "--device", "gpu"], "gpu"),
    ("run-image-size-zero", [*R, "--image-size", "0"], "0"),
    ("run-no-model", ["run", "--data", "{data}", "--out", "{out}"], "--arch"),
    ("run-demo-patch", [*R, "--patch-size", "7", "--image-size", "64"], "64"),
    # compare
    ("compare-b-typo-before-a-runs", [*C, "--model-b", "vit_smal", "--out", "{out}"], "vit_smal"),
    ("compare-b-folder-checkpoint", [*C, "--checkpoint-b", "{ckdir}", "--out", "{out}"], "{ckdir}"),
    ("compare-missing-results", ["compare", "--results-a", "{root}/a.json", "--results-b", "{done}", "--out", "{out}"],
     "a.json"),
    ("compare-results-and-data", ["compare", "--results-a", "{done}", "--results-b", "{done}", "--data", "{data}",
                                  "--out", "{out}"], "--results-a"),
    ("compare-cmap-typo", ["compare", "--results-a", "{done}", "--results-b", "{done}", "--out", "{out}", "--cmap",
                           "cividus"], "cividus"),
    ("compare-out-is-a-file", [*C, "--checkpoint-b", "demo:shortcut", "--out", "{afile}"], "{afile}"),
    ("compare-b-image-size", [*C, "--checkpoint-b", "demo:shortcut", "--image-size", "30", "--out", "{out}"], "30"),
    # report
    ("report-missing-results", ["report", "{root}/nope/results.json"], "results.json"),
    ("report-empty-folder", ["report", "{empty}"], "{empty}"),
    ("report-not-results", ["report", "{notresults}"], "notresults.json"),
    ("report-sort-by-typo", [*D, "--sort-by", "gradcam.pointing_gam"], "gradcam.pointing_gam"),
    ("report-colormap-typo", [*D, "--colormap", "cividus"], "cividus"),
    ("report-out-under-a-file", [*D, "--out", "{afile}/r.html"], "{afile}"),
    # demo, init, listings
    ("demo-device-typo", ["demo", "--device", "cdua", "--out", "{out}"], "cdua"),
    ("demo-too-few-images", ["demo", "-n", "2", "--out", "{out}"], "2"),
    ("demo-out-is-a-file", ["demo", "--out", "{afile}"], "{afile}"),
    ("init-out-is-a-file", ["init", "--out", "{afile}"], "{afile}"),
    ("models-unknown-option", ["models", "--verbose"], "--verbose"),
    ("methods-extra-argument", ["methods", "gradcam"], "gradcam"),
]


@pytest.mark.parametrize("args, expected", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_exits_2_naming_the_bad_value(env, args, expected):
    argv = [a.format(**env) for a in args]
    r = CliRunner().invoke(main, argv)
    out = r.output
    assert r.exit_code == 2, f"{argv}\n{out}\n{r.exception!r}"
    assert "Traceback" not in out and "Internal error" not in out, out
    assert expected.format(**env) in out, out
    assert not env["out"].exists(), "the mistake was caught after something was written"


def test_the_table_covers_every_command_with_40_mistakes():
    commands = {m[1][0] for m in MISTAKES}
    assert len(MISTAKES) >= 40
    assert commands == {"visualize", "run", "compare", "report", "demo", "init", "models", "methods"}


def test_init_refuses_to_overwrite(env, tmp_path):
    assert CliRunner().invoke(main, ["init", "--out", str(tmp_path)]).exit_code == 0
    r = CliRunner().invoke(main, ["init", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "audit.toml already exists" in r.output and "--force" in r.output
    assert CliRunner().invoke(main, ["init", "--out", str(tmp_path), "--force"]).exit_code == 0
