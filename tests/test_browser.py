"""The report in a real browser: headless Chromium opens it from file:// with no network.

The page records script errors and failed image loads in ``data-report-errors`` on
``<html>`` (a few lines of inline JS), which ``--dump-dom`` reads back deterministically;
console output on stderr is checked too. Skipped only when no Chromium is installed
(Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from auditor.report import render_report

from test_report import make_audit

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on PATH (Debian: apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0"]


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


def open_page(tmp_path, page) -> tuple[str, list[str], str]:
    """The DOM after load, the errors the page recorded, and the console's stderr."""
    r = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert 'data-report-ready="1"' in r.stdout, r.stderr[-2000:]
    errors = json.loads(html.unescape(re.search(r'data-report-errors="([^"]*)"', r.stdout).group(1)))
    return r.stdout, errors, r.stderr


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line
            or ("CONSOLE" in line and "Error" in line)]


@pytest.mark.parametrize("inline", [True, False], ids=["embedded", "assets-folder"])
def test_report_opens_without_errors_and_paginates(tmp_path, inline):
    results = make_audit(tmp_path, n=60)
    page = render_report(results, inline_limit=2**30 if inline else 0)
    dom, errors, stderr = open_page(tmp_path, page)
    assert errors == []
    assert _console_errors(stderr) == []
    assert int(re.search(r'data-images-loaded="(\d+)"', dom).group(1)) >= 4  # plots + the first cards
    cards = re.findall(r'<article class="card"[^>]*>', dom)
    assert len(cards) == 60 and sum(" hidden" in c for c in cards) == 10  # pages of 50
    assert "Page 1 of 2" in dom


def test_first_screen_is_not_blank(tmp_path):
    page = render_report(make_audit(tmp_path, n=8))
    for width in (1280, 400):
        shot = tmp_path / f"shot{width}.png"
        chromium(tmp_path, f"--window-size={width},900", f"--screenshot={shot}", page.as_uri())
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert pixels.shape == (900, width)
        assert pixels.std() > 20, f"the first screen at {width} px looks blank (std {pixels.std():.1f})"
        assert (pixels < 128).mean() > 0.01  # some text / banner is drawn


def test_the_probe_catches_a_broken_image_and_a_script_error(tmp_path):
    """The detector itself can fail: a missing image file and a thrown error are both reported."""
    results = make_audit(tmp_path, n=4)
    page = render_report(results, inline_limit=0)
    text = page.read_text(encoding="utf-8")
    first = re.search(r'src="(assets/[^"]+)"', text).group(1)
    broken = text.replace(first, "assets/no-such-file.jpg", 1).replace("</body>", "<script>null.boom();</script></body>")
    page.write_text(broken, encoding="utf-8")
    _, errors, _ = open_page(tmp_path, page)
    assert any("no-such-file.jpg" in e for e in errors)
    assert any(e.startswith("script error") for e in errors)
