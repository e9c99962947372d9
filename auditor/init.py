"""``auditor init``: a starter audit for a project, in three files.

- ``audit.toml``: the thresholds the release must hold (read by ``--thresholds``);
- ``tests/test_attention_audit.py``: the audit as a pytest test, through the ``auditor_run``
  fixture of the installed plugin (:mod:`auditor.pytest_plugin`); it writes ``audit-out/``
  (``report.html``, ``junit.xml``, ``results.json``) and fails with the failed checks;
- ``.github/workflows/attention-audit.yml``: GitHub Actions running that test and keeping
  ``report.html`` and ``junit.xml`` as artefacts, pass or fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .errors import UsageError

FILES = ("audit.toml", "tests/test_attention_audit.py", ".github/workflows/attention-audit.yml")
#: methods of the starter audit: one gradient, one attention method (a CNN: drop rollout)
STARTER_METHODS = ("gradcam", "rollout")

AUDIT_TOML = '''\
# Thresholds of the attention audit (auditor run --thresholds audit.toml; the pytest audit reads it too).
# Each table is METHOD.METRIC; `min` / `max` gate the mean over all images, `max_drop` the paired
# loss against a baseline results.json. Images whose map is NaN or constant count against a check
# (allow some with --max-nan N); error rows fail the audit beyond [errors] max. See `auditor methods`
# for the methods a model supports, and the README's "The gate's rules".

[gradcam.pointing_game]
min = 0.5          # the map's peak lies inside the box on at least half of the images

[rollout.pointing_game]
min = 0.5

# [gradcam.pointing_game.per_class]
# cat = { min = 0.4 }

[errors]
max = 0            # images that may fail to load or score
'''

TEST_FILE = '''\
"""The attention audit as a test (written by `auditor init`): it fails when the model stops
looking where it should. Edit DATA, CHECKPOINT and ../audit.toml; the report and JUnit file
land in audit-out/ (CI keeps them as artefacts)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = {data!r}
CHECKPOINT = {checkpoint!r}
ARCH = {arch!r}  # not needed for demo: / pypi: checkpoints
METHODS = {methods!r}


def test_attention_audit(auditor_run):
    data = DATA if Path(DATA).is_absolute() else str(ROOT / DATA)
    # The fixture fails this test with every failed check (thresholds, NaN maps, error rows).
    auditor_run(data=data, arch=ARCH, checkpoint=CHECKPOINT, methods=list(METHODS),
                thresholds=str(ROOT / "audit.toml"), out=ROOT / "audit-out", overwrite=True, report=True)
'''

WORKFLOW = '''\
# Attention audit (written by `auditor init`): runs tests/test_attention_audit.py and keeps
# the HTML report and the JUnit file as artefacts, whether the audit passes or fails.
name: attention-audit
on: [push, pull_request]
jobs:
  audit:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install
        run: |
          pip install torch --index-url https://download.pytorch.org/whl/cpu
          pip install attention-auditor pytest
      - name: Attention audit
        run: python -m pytest tests/test_attention_audit.py -q
      - name: Keep the report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: attention-audit
          path: |
            audit-out/report.html
            audit-out/junit.xml
'''


def write_starter(folder: str | Path = ".", *, data: str = "data/manifest.jsonl", checkpoint: str = "demo:clean",
                  arch: str | None = None, methods: Sequence[str] = STARTER_METHODS,
                  force: bool = False) -> list[Path]:
    """Write the three starter files under ``folder``; existing files are refused unless ``force``.

    Returns the written paths. Raises :class:`UsageError` naming a file that exists.
    """
    root = Path(folder)
    paths = [root / f for f in FILES]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists: edit it, or add --force to replace "
                         + ", ".join(str(p) for p in existing))
    texts = (AUDIT_TOML, TEST_FILE.format(data=data, checkpoint=checkpoint, arch=arch, methods=tuple(methods)),
             WORKFLOW)
    for path, text in zip(paths, texts):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return paths
