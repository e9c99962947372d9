"""The HTML report, rendered from a fixed, generated audit (results.json + token_maps.npz +
images) -- no model, no runner: what the page must show is known by construction."""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.report import render_report, templates_dir
from auditor.results import SCHEMA_VERSION, schema_path, write_json
from auditor.savers import MapWriter

SCRIPT_NAME = "<script>alert(1)</script>.png"  # a real relative path: folder '<script>alert(1)<', file 'script>.png'
METRICS = ("pointing_game", "relevance_mass", "auc_roc", "nss")
CLASSES = ("cat & dog", "car")


def _stat(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "n_nan": len(values)}
    half = 1.96 * v.std() / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "ci_low": float(v.mean() - half), "ci_high": float(v.mean() + half),
            "n": int(len(v)), "n_nan": len(values) - len(v)}


def _summarise(rows) -> dict:
    out: dict = {}
    for r in rows:
        for m, mets in r["metrics"].items():
            for k, v in mets.items():
                out.setdefault(m, {}).setdefault(k, []).append(v)
    return {m: {k: _stat(v) for k, v in mets.items()} for m, mets in out.items()}


@functools.lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def _photo(rng, size) -> np.ndarray:
    """A crop of a photo, so that JPEG sizes are realistic."""
    h, w = size
    tex = _texture("astronaut" if rng.random() < 0.5 else "coffee")
    y, x = int(rng.integers(0, tex.shape[0] - h)), int(rng.integers(0, tex.shape[1] - w))
    return tex[y:y + h, x:x + w].copy()


def make_audit(root: Path, n: int = 12, *, size=(96, 128), grid=(6, 8), methods=("gradcam", "rollout"),
               seed: int = 0, errors: bool = True, corner: bool = False) -> Path:
    """Write images, manifest.jsonl, results.json and token_maps.npz as ``auditor run`` would.

    Every image has a red square; gradcam's map peaks on it (or on the top-left corner when
    ``corner``); rollout's map is noise. Returns the results.json path.
    """
    rng = np.random.default_rng(seed)
    data, out = root / "data", root / "audit"
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    h, w = size
    gh, gw = grid
    manifest = [json.dumps({"classes": list(CLASSES)})]
    rows = []
    with MapWriter(out, full=False) as writer:
        for i in range(n):
            rel = SCRIPT_NAME if i == 1 else f"img{i:03d}.png"
            img = _photo(rng, size)
            r0, c0 = int(rng.integers(1, gh - 1)), int(rng.integers(1, gw - 1))
            box = [c0 * w // gw, r0 * h // gh, (c0 + 1) * w // gw, (r0 + 1) * h // gh]
            img[box[1]:box[3], box[0]:box[2]] = (230, 20, 20)
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(data / rel, compress_level=1)
            label = i % 2
            manifest.append(json.dumps({"image": rel, "id": rel, "label": CLASSES[label], "boxes": [box],
                                        "fixations": [[box[0] + 3, box[1] + 3], [box[2] - 3, box[3] - 3]]}))
            maps = {"gradcam": np.full(grid, 0.05, np.float32), "rollout": rng.random(grid).astype(np.float32)}
            maps["gradcam"][(0, 0) if corner else (r0, c0)] = 1.0
            hit = not corner
            metrics = {"gradcam": {"pointing_game": float(hit), "relevance_mass": 0.8 - 0.6 * corner + 0.01 * i,
                                   "auc_roc": 0.9 - 0.5 * corner, "nss": 2.0 - 2 * corner},
                       "rollout": {"pointing_game": float(i % 3 == 0), "relevance_mass": 0.1 + 0.02 * i,
                                   "auc_roc": 0.55, "nss": None if i == 2 else 0.3}}
            metrics = {m: metrics[m] for m in methods}
            metrics["centre"] = {"pointing_game": float(i % 4 == 0), "relevance_mass": 0.2, "auc_roc": 0.6, "nss": 0.5}
            metrics["random"] = {"pointing_game": 0.0, "relevance_mass": 0.04, "auc_roc": 0.5, "nss": 0.0}
            for m in methods:
                writer.add(m, rel, maps[m])
            rows.append({"id": rel, "image": str(data / rel), "label": label, "label_name": CLASSES[label],
                         "split": None, "source": "manifest.jsonl", "target": label, "prediction": (label + i % 5 // 4) % 2,
                         "prediction_score": 0.9, "metrics": metrics,
                         "map_status": {"rollout": "the map is constant"} if i == 3 and "rollout" in methods else {},
                         "error": None})
    if errors:
        rows.append({"id": "missing.png", "image": str(data / "missing.png"), "label": None, "label_name": None,
                     "split": None, "source": "manifest.jsonl", "target": None, "prediction": None,
                     "prediction_score": None, "metrics": {}, "map_status": {},
                     "error": "Image not found: missing.png <b>check</b> the path"})
    (data / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
    ok = [r for r in rows if not r["error"]]
    summary = _summarise(ok)
    per_class = {c: _summarise([r for r in ok if r["label_name"] == c]) for c in CLASSES}
    pg = summary["gradcam"]["pointing_game"]["mean"] if "gradcam" in summary else None
    verdicts = [{"name": "gradcam.pointing_game >= 0.8", "method": "gradcam", "metric": "pointing_game",
                 "kind": "min", "threshold": 0.8, "cls": None, "value": pg, "passed": pg is not None and pg >= 0.8,
                 "reason": f"measured {pg}"},
                {"name": "gradcam.relevance_mass >= 0.99", "method": "gradcam", "metric": "relevance_mass",
                 "kind": "min", "threshold": 0.99, "cls": None, "value": 0.5, "passed": False, "reason": "measured 0.5"},
                {"name": "gradcam.pointing_game[car] >= 0.5", "method": "gradcam", "metric": "pointing_game",
                 "kind": "min", "threshold": 0.5, "cls": "car", "value": 1.0, "passed": True, "reason": "measured 1"}]
    results = {
        "schema_version": SCHEMA_VERSION,
        "settings": {"data": str(data / "manifest.jsonl"), "classes": list(CLASSES),
                     "models": [{"name": "vit_<b>tiny</b>", "kwargs": {"depth": 2},
                                 "checkpoint": {"path": "ckpt.pth", "sha256": "ab" * 32, "container": None, "notices": []}}],
                     "methods": {m: {"normalization": "relu_minmax" if m == "gradcam" else "minmax"} for m in methods},
                     "skipped_methods": {"cls_attention": "needs a ViT"}, "baselines": ["centre", "random"],
                     "preprocessing": {"size": [32, 32], "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "bicubic"},
                     "target": "label", "thresholds": [], "baseline_results": None, "seed": 0, "batch_size": 16,
                     "versions": {"python": "3.x", "torch": "2.x"}},
        "summary": summary, "per_class": per_class, "rows": rows, "verdicts": verdicts,
        "passed": all(v["passed"] for v in verdicts),
        "counts": {"images": len(rows), "ok": len(ok), "errors": len(rows) - len(ok)},
        "timing": {"started": "2025-01-01T12:00:00+0000", "seconds": 12.5},
    }
    jsonschema.validate(json.loads(json.dumps(results)), json.loads(schema_path().read_text()))
    write_json(out / "results.json", results)
    return out / "results.json"


@pytest.fixture
def audit(tmp_path):
    return make_audit(tmp_path)


def _srcs(page: str) -> list[str]:
    return re.findall(r'<img[^>]*?\ssrc="([^"]+)"', page)


def test_report_shows_every_method_metric_verdict_and_image(audit):
    page = render_report(audit).read_text(encoding="utf-8")
    data = json.loads(audit.read_text())
    for method in ("gradcam", "rollout", "centre", "random"):
        assert method in page
    for metric in METRICS:
        assert metric in page
    for v in data["verdicts"]:
        assert html.escape(v["name"]) in page
    assert "✗ FAIL" in page and page.index("gradcam.relevance_mass &gt;= 0.99") < page.index("PASS gradcam.pointing_game")
    for r in data["rows"]:
        assert html.escape(r["id"]) in page
    assert "check&lt;/b&gt; the path" in page  # the error row, escaped
    assert "abababababab" in page and "ab" * 32 in page  # short sha + full in the title
    assert "cat &amp; dog" in page
    assert "not above centre" in page  # rollout's relevance mass does not beat the centre baseline


def test_user_strings_are_escaped(audit):
    page = render_report(audit).read_text(encoding="utf-8")
    assert html.escape(SCRIPT_NAME) in page
    assert "<script>alert" not in page and "alert(1)</script>" not in page
    assert "<b>" not in page  # the model name and the error reason hold <b>
    own = re.findall(r"<script[^>]*>", page)
    assert own == ["<script>", '<script type="application/json" id="gallery-orders">', "<script>"]


def test_small_reports_embed_images_large_ones_use_an_assets_folder(tmp_path):
    results = make_audit(tmp_path, n=6)
    page = render_report(results).read_text(encoding="utf-8")
    srcs = _srcs(page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    for s in srcs[:3]:
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).verify()
    assert not (results.parent / "assets").exists()

    page = render_report(results, inline_limit=10_000).read_text(encoding="utf-8")
    srcs = _srcs(page)
    assert srcs and all(s.startswith("assets/report-") for s in srcs)
    for s in srcs:
        Image.open(results.parent / s).verify()
    assert "in the folder assets/" in page
    render_report(results)  # back to inline: the stale files are removed
    assert not (results.parent / "assets").exists()


def test_gallery_is_worst_first_with_alternative_orders(tmp_path):
    results = make_audit(tmp_path, n=8, errors=False)
    page = render_report(results, sort_by="gradcam.relevance_mass").read_text(encoding="utf-8")
    ids = re.findall(r'<article class="card" id="card-\d+"[^>]*>\s*<header><h3><code>([^<]+)</code>', page)
    assert ids[0] == "img000.png" and ids[-1] == "img007.png"  # relevance mass grows with the index
    orders = json.loads(re.search(r'id="gallery-orders">(.*?)</script>', page).group(1))
    assert all(sorted(o) == list(range(8)) for o in orders.values())
    assert 'loading="lazy"' in page
    with pytest.raises(Exception, match="cannot sort by"):
        render_report(results, sort_by="gradcam.nope")


def test_every_image_has_alt_text_and_the_colour_map_is_selectable(audit):
    page = render_report(audit, cmap="cividis").read_text(encoding="utf-8")
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert imgs and all(re.search(r'\salt="[^"]+"', t) for t in imgs if 'id="lightbox-img"' not in t)
    assert "(cividis)" in page
    assert "@media print" in page and "@media (max-width" in page


def test_report_never_builds_a_model(audit, monkeypatch):
    import auditor.models
    import auditor.runner

    def boom(*a, **k):
        raise AssertionError("the report must not build a model")

    monkeypatch.setattr(auditor.models, "build_model", boom)
    monkeypatch.setattr(auditor.runner, "build_model", boom, raising=False)
    r = CliRunner().invoke(main, ["report", str(audit), "--out", str(audit.parent / "x.html"), "--cmap", "cividis"])
    assert r.exit_code == 0, r.output
    assert (audit.parent / "x.html").is_file()
    assert str(audit.parent / "x.html") in r.output


def test_report_cli_errors(tmp_path, audit):
    r = CliRunner().invoke(main, ["report", str(tmp_path / "nope.json")])
    assert r.exit_code == 2 and "not found" in r.output.lower() and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["report", str(audit), "--cmap", "no-such-map"])
    assert r.exit_code == 2 and "colormap" in r.output


def test_missing_maps_and_images_are_shown_not_broken(audit):
    (audit.parent / "token_maps.npz").unlink()
    (audit.parent.parent / "data" / "img000.png").unlink()
    page = render_report(audit).read_text(encoding="utf-8")
    assert "token_maps.npz is missing" in page
    assert "image file not found" in page


def test_templates_are_found_and_shipped():
    folder = templates_dir()
    assert (folder / "report.html.j2").is_file() and (folder / "compare.html.j2").is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"templates" = "auditor/_templates"' in pyproject


def test_a_500_image_report_stays_small(tmp_path):
    """320x240 photos, two methods: measured ~32 KB per image (assets) / ~42 KB (all embedded).
    By default the gallery draws 60 of them (embedded); ``gallery=-1`` draws every image."""
    results = make_audit(tmp_path, n=500, size=(240, 320), grid=(14, 14), errors=False)
    page = render_report(results)
    assert page.stat().st_size < 4e6 and not (page.parent / "assets").exists()
    assert page.read_text(encoding="utf-8").count('<article class="card"') == 60
    page = render_report(results, gallery=-1)
    assets = page.parent / "assets"
    total = page.stat().st_size + sum(f.stat().st_size for f in assets.iterdir())
    assert total < 40e6 and total / 500 < 60e3, f"{total / 500 / 1e3:.1f} KB per image"
    assert page.stat().st_size < 5e6  # past the inline limit the HTML only links the images


def square_set_and_toy_model(tmp_path, monkeypatch) -> Path:
    """6 square images in ``tmp_path/data`` and ``toy:build`` (a small ViT) importable from the cwd; returns the data."""
    from test_run import write_square_set

    data = write_square_set(tmp_path / "data", n=6)
    (tmp_path / "toy.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_run import _vit\ndef build():\n    return _vit()\n"
        % str(Path(__file__).parent))
    monkeypatch.chdir(tmp_path)
    return data


def test_auditor_run_writes_the_report_unless_told_not_to(tmp_path, monkeypatch):
    data = square_set_and_toy_model(tmp_path, monkeypatch)
    args = ["run", "--data", str(data), "--model", "toy:build", "--methods", "gradcam"]
    r = CliRunner().invoke(main, args + ["--out", "with", "--fail-under", "gradcam.pointing_game=0.9"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "with" / "report.html").read_text(encoding="utf-8")
    assert "✓ PASS" in page and "img005.png" in page and "gradcam.pointing_game &gt;= 0.9" in page
    srcs = _srcs(page)  # plots (PNG: one per metric, then per class), then per image: original + gradcam overlay
    assert sum(src.startswith("data:image/jpeg") for src in srcs) == 6 * 2
    assert sum(src.startswith("data:image/png") for src in srcs) >= 2
    r = CliRunner().invoke(main, args + ["--out", "without", "--no-report"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "without" / "report.html").exists() and (tmp_path / "without" / "results.json").exists()
