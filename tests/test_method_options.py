"""Method options reach the run: typed, recorded in results.json's settings and in the resume
fingerprint; configured method objects are accepted; a bad option is exit 2 listing valid ones."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.errors import UsageError
from auditor.methods import build_methods, create_method
from auditor.runner import run_audit

from test_run import _vit, write_square_set


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_square_set(tmp_path_factory.mktemp("data"), n=4)


def test_options_objects_and_the_adapter_are_recorded_in_the_settings(data, tmp_path):
    res = run_audit(data, out=tmp_path / "o", model=_vit(), methods=["gradcam", create_method("rollout", head_fusion="max")],
                    method_options=["gradcam.layer=blocks.0.norm1"])
    settings = json.loads((tmp_path / "o" / "results.json").read_text())["settings"]
    methods = settings["methods"]
    assert settings["models"][0]["adapter"] == {"family": "vit", "prefix_tokens": 1, "attention_layers": 1,
                                                "gradcam_layer": "blocks.0.norm1", "headless": False}  # 1 block
    assert methods["gradcam"]["layer"] == "blocks.0.norm1"
    assert methods["rollout"]["head_fusion"] == "max" and methods["rollout"]["discard_ratio"] == 0.0
    assert res.data["settings"]["methods"] == methods


class _Stop(Exception):
    pass


def _stop(done, total):
    raise _Stop


def test_a_changed_option_refuses_resume(data, tmp_path):
    with pytest.raises(_Stop):  # interrupted after its first batch
        run_audit(data, out=tmp_path / "o", model=_vit(), methods=["rollout"], batch_size=2, progress=_stop)
    with pytest.raises(UsageError, match="Cannot resume") as e:
        run_audit(data, out=tmp_path / "o", model=_vit(), methods=["rollout"],
                  method_options={"rollout": {"discard_ratio": 0.5}}, batch_size=2, resume=True)
    assert "the methods" in str(e.value)
    # the sub-key that changed, not the whole methods dict
    assert "(methods.rollout.discard_ratio: was 0.0, now 0.5)" in str(e.value)


def test_an_option_for_a_method_not_run_or_given_as_object_is_refused():
    with pytest.raises(UsageError, match="not among the methods built by name"):
        build_methods(["gradcam"], ["rollout.head_fusion=max"])
    with pytest.raises(UsageError, match="not among the methods built by name"):
        build_methods([create_method("rollout")], ["rollout.head_fusion=max"])
    with pytest.raises(UsageError, match=r"Valid options: cls_attention\.layer, cls_attention\.head"):
        build_methods(None, {"cls_attention": {"heads": 2}})


def test_cli_unknown_option_is_exit_2_listing_the_valid_ones(data, tmp_path):
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--arch", "vit_tiny", "--out", str(tmp_path / "o"),
                                  "--method-option", "rollout.fusion=max"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Valid options: rollout.head_fusion, rollout.discard_ratio" in r.output
