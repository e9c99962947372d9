"""The pytest fixture is a gate: it fails the test on the audit's own failed checks."""

from __future__ import annotations

import json

import pytest

from test_run import _vit, write_square_set

BROKEN = [json.dumps({"image": f"gone{i}.png", "label": "red", "boxes": [[0, 0, 8, 8]]}) for i in range(3)]


def test_error_rows_fail_the_test_even_when_every_mean_is_high(tmp_path, auditor_run):
    data = write_square_set(tmp_path / "data", n=6, extra_lines=BROKEN)
    with pytest.raises(pytest.fail.Exception) as failed:
        auditor_run(data=data, model=_vit(), methods=["gradcam"], out=tmp_path / "o")
    assert "errors.error_rows <= 0" in str(failed.value) and "gone0.png" in str(failed.value)
    # What a summary-only assertion would have seen: a passing mean over the 6 readable images.
    r = auditor_run(data=data, model=_vit(), methods=["gradcam"], out=tmp_path / "o2", check=False)
    assert not r.passed and r.summary["gradcam"]["pointing_game"].n == 6
    assert r.summary["gradcam"]["pointing_game"].mean >= 0.8


def test_a_failed_threshold_fails_the_test_and_a_passing_audit_returns_its_result(tmp_path, auditor_run):
    data = write_square_set(tmp_path / "data", n=6)
    with pytest.raises(pytest.fail.Exception, match=r"gradcam.pointing_game >= 0.999"):
        auditor_run(data=data, model=_vit(), methods=["gradcam"], out=tmp_path / "o",
                    fail_under=["gradcam.pointing_game=0.999"], max_errors=0, gate_on="ci")
    r = auditor_run(data=data, model=_vit(), methods=["gradcam"], out=tmp_path / "o2",
                    fail_under=["gradcam.pointing_game=0.5"])
    assert r.passed and r.summary["gradcam"]["pointing_game"].n == 6
