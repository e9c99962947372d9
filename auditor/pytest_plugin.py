"""pytest plugin (``pytest11`` entry point): audits as test functions.

>>> def test_attention(auditor_run):
...     auditor_run(data="manifest.jsonl", arch="vit_small", checkpoint="ckpt.pth",
...                 fail_under=["gradcam.pointing_game=0.8"])

The fixture fails the test whenever the audit's own gate fails: a threshold, NaN maps beyond
``max_nan``, or error rows beyond ``max_errors`` (default 0). An assertion on a summary mean
alone would pass when 23 of 24 images could not be read and the last one scored well, so the
gate is never left to the caller. ``check=False`` returns a failed result instead, for a test
that inspects it.
"""

from __future__ import annotations

import pytest


def failure_message(result) -> str:
    """``"attention audit failed ..."`` with one line per failed verdict, for ``pytest.fail``."""
    failed = [f"  {v['name']}: {v['reason']}" for v in result.verdicts if not v["passed"]]
    where = result.out / "report.html"
    see = f" (see {where})" if where.exists() else ""
    return "attention audit failed" + see + ":\n" + "\n".join(failed)


@pytest.fixture
def auditor_run(tmp_path_factory):
    """A function that runs an audit (same arguments as :func:`auditor.runner.run_audit`,
    plus ``check=True``) and fails the test when the audit's gate fails."""
    from .runner import run_audit

    def run(*, check: bool = True, **kwargs):
        kwargs.setdefault("out", tmp_path_factory.mktemp("audit"))
        result = run_audit(**kwargs)
        if check and not result.passed:
            pytest.fail(failure_message(result), pytrace=False)
        return result

    return run
