"""pytest plugin (``pytest11`` entry point): audits as test functions.

>>> def test_attention(auditor_run):
...     r = auditor_run(data="manifest.jsonl", arch="vit_small", checkpoint="ckpt.pth")
...     assert r.summary["gradcam"]["pointing_game"].mean >= 0.8
"""

from __future__ import annotations

import pytest


@pytest.fixture
def auditor_run(tmp_path_factory):
    """A function that runs an audit (same arguments as :func:`auditor.runner.run_audit`)."""
    from .runner import run_audit

    def run(**kwargs):
        kwargs.setdefault("out", tmp_path_factory.mktemp("audit"))
        return run_audit(**kwargs)

    return run
