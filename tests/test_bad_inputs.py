"""Bad input, hostile files and faults, through `auditor run`: each bad input is an error row
with a precise reason (or works correctly), and the other images' results stay intact.

The record-level cases share ONE audit (a generated square set plus every bad entry), run
once per module through the CLI; each case is then its own parametrised test. Whole-run
inputs (manifests, checkpoints) each get a CLI run that must exit 2 without a traceback.
"""

from __future__ import annotations

import html
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.runner import run_audit

from test_run import CornerCNN, _vit, write_square_set

TESTS = Path(__file__).parent
GOOD = [f"img{i:03d}.png" for i in range(6)]


# --------------------------------------------------------------------------- file builders

def _noise(h, w, seed=0):
    return np.repeat((np.random.default_rng(seed).random((h, w, 1)) * 128).astype(np.uint8), 3, axis=2)


def _red_square(h=64, w=64):
    img = _noise(h, w)
    img[16:32, 32:48] = (255, 0, 0)
    return img


def _png_bytes(img) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(w=20000, h=20000) -> bytes:
    """A valid PNG header that declares w x h pixels (400 M): PIL sees the size before decoding."""
    data = _png_bytes(np.zeros((1, 1, 3), np.uint8))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def _save(root, name, im, **kw):
    im.save(root / name, **kw)
    return name


def _write(root, name, data: bytes):
    (root / name).write_bytes(data)
    return name


def _exif_rotated(root):
    """Stored 64 wide x 32 tall, red at the stored top-left; EXIF 6 shows it 32 x 64 with red top-right."""
    img = _noise(32, 64, seed=3)
    img[0:16, 0:16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(root / "exif.jpg", exif=exif, quality=100)
    return "exif.jpg"


BOX = [[32, 16, 48, 32]]  # the red square of _red_square
FIX = [[40.0, 24.0]]


def _img(name, img=None):
    def build(root):
        Image.fromarray(_red_square() if img is None else img).save(root / name)
        return name
    return build


def _gaze(name, array, image="img000.png"):
    def build(root):
        np.save(root / name, array)
        return {"image": image, "label": "red", "gaze": name}
    return build


def _entry(image_builder, **fields):
    """A manifest entry for an image written by ``image_builder(root) -> relative path``."""
    def build(root):
        rel = image_builder(root)
        return {"image": rel, "label": "red", **fields}
    return build


def _line(obj):
    return lambda root: obj


def _raw(text):
    return lambda root: text


def _symlink_out(root):
    outside = root.parent / "outside.png"
    Image.fromarray(_red_square()).save(outside)
    (root / "link.png").symlink_to(outside)
    return {"image": "link.png", "label": "red"}


def _exif_entry(root):
    return {"image": _exif_rotated(root), "label": "red", "boxes": [[16, 0, 32, 16]]}


def _rgba(root):
    a = np.dstack([_red_square(), np.full((64, 64), 255, np.uint8)])
    a[0:8, 0:8, 3] = 0
    return _save(root, "rgba.png", Image.fromarray(a, "RGBA"))


def _palette(root):
    return _save(root, "pal.png", Image.fromarray(_red_square()).convert("P", palette=Image.ADAPTIVE))


def _palette_transparent(root):
    im = Image.fromarray(_red_square()).convert("P", palette=Image.ADAPTIVE)
    im.info["transparency"] = 0
    return _save(root, "pal_t.png", im, transparency=0)


def _u16(root):
    a = (_red_square()[..., 0].astype(np.uint16) * 257)
    return _save(root, "u16.png", Image.fromarray(a))


def _float_tiff(root):
    return _save(root, "f32.tif", Image.fromarray(_red_square()[..., 0].astype(np.float32) / 255, mode="F"))


def _nan_tiff(root):
    a = np.zeros((8, 8), np.float32)
    a[2, 2] = np.nan
    return _save(root, "nan.tif", Image.fromarray(a, mode="F"))


def _animated(root):
    frames = [Image.fromarray(_red_square()), Image.new("RGB", (64, 64), (0, 255, 0))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    return "anim.gif"


def _truncated(name, fmt):
    def build(root):
        Image.fromarray(_noise(64, 64)).save(root / name, format=fmt)
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])
        return name
    return build


def _tiny(root):
    img = _noise(4, 4)
    img[0:2, 2:4] = (255, 0, 0)
    return _save(root, "tiny.png", Image.fromarray(img))


def _bmp_as_png(root):
    Image.fromarray(_red_square()).save(root / "bmp.png", format="BMP")
    return "bmp.png"


# (case id, entry builder, expected): expected is ("error", fragment) or ("ok", check on the row)
ERR, OK = "error", "ok"
CASES = [
    # images that cannot be read
    ("missing-image", _line({"image": "nope.png", "id": "missing-image"}), (ERR, "Image not found")),
    ("zero-byte", _entry(lambda r: _write(r, "zero.png", b"")), (ERR, "empty file (0 bytes)")),
    ("text-as-jpg", _entry(lambda r: _write(r, "text.jpg", b"hello, I am text")), (ERR, "Not a readable image")),
    ("html-as-png", _entry(lambda r: _write(r, "page.png", b"<html><body>hi</body></html>")), (ERR, "Not a readable image")),
    ("garbage-gif", _entry(lambda r: _write(r, "junk.gif", os.urandom(64))), (ERR, "Not a readable image")),
    ("png-signature-only", _entry(lambda r: _write(r, "sig.png", b"\x89PNG\r\n\x1a\n")), (ERR, "sig.png")),
    ("truncated-png", _entry(_truncated("cut.png", "PNG")), (ERR, "Corrupt or truncated image")),
    ("truncated-jpeg", _entry(_truncated("cut.jpg", "JPEG")), (ERR, "Corrupt or truncated image")),
    ("decompression-bomb", _entry(lambda r: _write(r, "bomb.png", _bomb_png())), (ERR, "Image too large")),
    ("nan-float-tiff", _entry(_nan_tiff), (ERR, "NaN or infinite pixel values")),
    ("directory-as-image", _entry(lambda r: (r / "dir.png").mkdir() or "dir.png"), (ERR, "Image not found")),
    # images that must work (first frame, modes, orientation, sizes)
    ("rgba", _entry(_rgba, boxes=BOX), (OK, "pointing")),
    ("la", _entry(lambda r: _save(r, "la.png", Image.fromarray(_noise(64, 64)[..., 0]).convert("LA"))), (OK, "scored")),
    ("palette", _entry(_palette, boxes=BOX), (OK, "pointing")),
    ("palette-transparent", _entry(_palette_transparent, boxes=BOX), (OK, "pointing")),
    ("cmyk-jpeg", _entry(lambda r: _save(r, "cmyk.jpg", Image.fromarray(_red_square()).convert("CMYK"), quality=100),
                         boxes=BOX), (OK, "pointing")),
    ("16-bit-png", _entry(_u16, boxes=BOX), (OK, "scored")),
    ("float-tiff", _entry(_float_tiff, boxes=BOX), (OK, "scored")),
    ("greyscale", _entry(lambda r: _save(r, "grey.png", Image.fromarray(_red_square()).convert("L")), boxes=BOX),
     (OK, "scored")),
    ("exif-rotated", _exif_entry, (OK, "pointing")),
    ("animated-gif", _entry(_animated, boxes=BOX), (OK, "pointing")),
    ("one-pixel", _entry(lambda r: _save(r, "one.png", Image.new("RGB", (1, 1), (255, 0, 0))),
                         boxes=[[0, 0, 1, 1]], fixations=[[0.5, 0.5]]), (OK, "scored")),
    ("tiny-4px", _entry(_tiny, boxes=[[2, 0, 4, 2]], fixations=[[3.0, 1.0]]), (OK, "pointing")),
    ("wide-1000x40", _entry(lambda r: _save(r, "wide.png", Image.fromarray(_noise(40, 1000))), boxes=[[0, 0, 500, 40]]),
     (OK, "scored")),
    ("bmp-named-png", _entry(_bmp_as_png, boxes=BOX), (OK, "pointing")),
    ("gaze-other-size", _gaze("small_gaze.npy", np.outer(np.arange(1.0, 9), np.arange(1.0, 9))), (OK, "gaze")),
    # boxes
    ("box-outside", _line({"image": "img000.png", "id": "box-outside", "boxes": [[50, 50, 80, 60]]}),
     (ERR, "box 1 [50, 50, 80, 60] lies outside the image of 64x64 pixels")),
    ("box-negative", _line({"image": "img000.png", "id": "box-negative", "boxes": [[-1, 0, 10, 10]]}),
     (ERR, "lies outside the image")),
    ("box-inverted", _line({"image": "img000.png", "id": "box-inverted", "boxes": [[40, 10, 20, 30]]}),
     (ERR, "box 1 [40, 10, 20, 30] has x1 <= x0")),
    ("box-zero-area", _line({"image": "img000.png", "id": "box-zero-area", "boxes": [[10, 10, 20, 10]]}),
     (ERR, "has y1 <= y0")),
    ("box-too-thin", _line({"image": "img000.png", "id": "box-too-thin", "boxes": [[10.1, 10, 10.4, 20]]}),
     (ERR, "covers no pixel centre")),
    ("box-nan", _raw('{"image": "img000.png", "id": "box-nan", "boxes": [[NaN, 0, 10, 10]]}'),
     (ERR, "has a NaN or infinite coordinate")),
    ("box-infinite", _raw('{"image": "img000.png", "id": "box-infinite", "boxes": [[0, 0, Infinity, 10]]}'),
     (ERR, "has a NaN or infinite coordinate")),
    ("box-arity", _line({"image": "img000.png", "id": "box-arity", "boxes": [[0, 0, 10]]}),
     (ERR, "box 1 [0, 0, 10] has 3 values, expected 4")),
    ("box-strings", _line({"image": "img000.png", "id": "box-strings", "boxes": [["a", 0, 10, 10]]}),
     (ERR, "non-numeric coordinate")),
    ("boxes-not-list", _line({"image": "img000.png", "id": "boxes-not-list", "boxes": "0,0,10,10"}),
     (ERR, "boxes must be a list")),
    # fixations
    ("fixation-outside", _line({"image": "img000.png", "id": "fixation-outside", "fixations": [[64, 10]]}),
     (ERR, "fixation 1 (64, 10) lies outside the image of 64x64 pixels")),
    ("fixation-arity", _line({"image": "img000.png", "id": "fixation-arity", "fixations": [[1, 2, 3]]}),
     (ERR, "fixation 1 [1, 2, 3] has 3 values, expected 2")),
    ("fixations-not-list", _line({"image": "img000.png", "id": "fixations-not-list", "fixations": 5}),
     (ERR, "fixations must be a list")),
    # gaze maps
    ("gaze-all-zero", _gaze("zero_gaze.npy", np.zeros((64, 64))), (ERR, "is all zero")),
    ("gaze-nan", _gaze("nan_gaze.npy", np.full((64, 64), np.nan)), (ERR, "has NaN or infinite values")),
    ("gaze-negative", _gaze("neg_gaze.npy", -np.ones((64, 64))), (ERR, "has negative values")),
    ("gaze-3d", _gaze("cube_gaze.npy", np.ones((4, 4, 4))), (ERR, "must be a 2-D array")),
    ("gaze-pickled-object", _gaze("obj_gaze.npy", np.array([{"a": 1}], dtype=object)), (ERR, "Cannot read gaze map")),
    ("gaze-missing", _line({"image": "img000.png", "id": "gaze-missing", "gaze": "nowhere.npy"}), (ERR, "Gaze map not found")),
    ("gaze-not-image", lambda r: _write(r, "gaze.png", b"not a png") and
     {"image": "img000.png", "id": "gaze-not-image", "gaze": "gaze.png"}, (ERR, "Cannot read gaze map")),
    # labels, ids, fields, paths
    ("unknown-class", _line({"image": "img000.png", "id": "unknown-class", "label": "zebra"}),
     (ERR, 'unknown class name "zebra" (classes: red, green, blue)')),
    ("label-out-of-range", _line({"image": "img000.png", "id": "label-out-of-range", "label": 7}),
     (ERR, "label index 7 is out of range")),
    ("label-float", _line({"image": "img000.png", "id": "label-float", "label": 1.5}),
     (ERR, "label must be a class index or a class name")),
    ("duplicate-id", _line({"image": "img001.png", "id": "img000.png"}), (ERR, 'duplicate id "img000.png"')),
    ("unknown-field", _line({"image": "img000.png", "id": "unknown-field", "boxs": []}), (ERR, "unknown field(s) ['boxs']")),
    ("no-image-field", _line({"id": "no-image-field", "label": "red"}), (ERR, 'missing the required field "image"')),
    ("invalid-json", _raw('{"image": "img000.png", "id": "invalid-json",'), (ERR, "invalid JSON")),
    ("json-list-line", _raw('["img000.png", "red"]'), (ERR, "expected a JSON object per line")),
    ("late-header", _raw('{"classes": ["a"], "image": "img000.png", "id": "late-header"}'),
     (ERR, "header must be the first line")),
    ("empty-id", _line({"image": "img000.png", "id": ""}), (ERR, "id must be a non-empty string")),
    ("bad-split", _line({"image": "img000.png", "id": "bad-split", "split": "train"}), (ERR, "split must be one of")),
    ("meta-not-object", _line({"image": "img000.png", "id": "meta-not-object", "meta": [1]}),
     (ERR, "meta must be a JSON object")),
    ("dotdot-outside-root", _line({"image": "../outside.png", "id": "dotdot-outside-root"}), (ERR, "outside the data root")),
    ("absolute-outside-root", _line({"image": "/etc/passwd", "id": "absolute-outside-root"}), (ERR, "outside the data root")),
    ("symlink-outside-root", _symlink_out, (ERR, "outside the data root")),
    ("nul-in-path", _line({"image": "img\u0000.png", "id": "nul-in-path"}), (ERR, "contains a NUL character")),
]
IDS = [c[0] for c in CASES]
assert len(set(IDS)) == len(IDS)


def _manifest_line(case_id, obj):
    """A case's manifest line; its record id is the case id unless the case sets one."""
    return obj if isinstance(obj, str) else json.dumps({"id": case_id, **obj})


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    """One CLI audit of 6 good images + every case; and the 6 good images audited alone."""
    tmp = tmp_path_factory.mktemp("bad")
    root = tmp / "data"
    clean = write_square_set(tmp / "clean", n=len(GOOD))
    write_square_set(root, n=len(GOOD))
    lines = [_manifest_line(cid, build(root)) for cid, build, _ in CASES]
    with open(root / "manifest.jsonl", "a") as f:
        f.write("\n".join(lines) + "\n")
    (tmp / "badtoy.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom test_run import _vit\n"
                                   "def build():\n    return _vit()\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        args = ["run", "--model", "badtoy:build", "--methods", "gradcam", "--batch-size", "4", "--no-report"]
        r = CliRunner().invoke(main, args + ["--data", str(root / "manifest.jsonl"), "--out", "out"])
        assert r.exit_code == 1, r.output  # error rows fail the gate by default (--max-errors 0) ...
        assert "image(s) could not be audited, at most 0 allowed" in r.output
        assert "Traceback" not in r.output
        r2 = CliRunner().invoke(main, args + ["--data", str(clean), "--out", "clean"])
        assert r2.exit_code == 0, r2.output
    data = json.loads((tmp / "out" / "results.json").read_text())
    ref = json.loads((tmp / "clean" / "results.json").read_text())
    return data, ref, tmp


def _row(data, case_id):
    by_id = {}
    for r in data["rows"]:
        by_id.setdefault(r["id"], []).append(r)
    if case_id in by_id:
        return by_id[case_id][-1]
    # parse errors without an id are keyed by "<file>:<line>"; find the case's line
    line = IDS.index(case_id) + 2 + len(GOOD)
    return next(r for r in data["rows"] if r["id"] == f"manifest.jsonl:{line}" or
                (r["error"] or "").startswith(f"manifest.jsonl:{line}:"))


@pytest.mark.parametrize("case_id, expected", [(c[0], c[2]) for c in CASES], ids=IDS)
def test_bad_input(audit, case_id, expected):
    data, ref, _ = audit
    row = _row(data, case_id)
    kind, what = expected
    if kind == ERR:
        assert row["error"] and what in row["error"], row["error"]
        assert row["metrics"] == {}
    else:
        assert row["error"] is None, row["error"]
        assert row["prediction"] is not None  # it went through the model
        assert set(row["metrics"]) == {"gradcam", "centre", "random"}
        if kind == OK and what == "pointing":  # the red square is where the box says (orientation kept)
            assert row["metrics"]["gradcam"]["pointing_game"] == 1.0, row
        if what == "gaze":  # resized to the image, then scored
            assert row["metrics"]["centre"]["cc"] is not None


def test_the_good_images_are_intact(audit):
    data, ref, _ = audit
    got = {r["id"]: r for r in data["rows"] if r["id"] in GOOD and not r["error"]}
    want = {r["id"]: r for r in ref["rows"]}
    assert sorted(got) == GOOD
    for rid in GOOD:
        for method, mets in want[rid]["metrics"].items():
            assert got[rid]["metrics"][method] == pytest.approx(mets, rel=1e-5, abs=1e-6), (rid, method)
    n_ok = sum(1 for c in CASES if c[2][0] == OK)
    assert data["counts"]["ok"] == len(GOOD) + n_ok
    assert data["counts"]["errors"] == len(CASES) - n_ok


def test_case_count():
    """The acceptance asks for >= 40 distinct bad inputs in this file (plus the whole-run ones below)."""
    total = len(CASES) + len(WHOLE_RUN) + len(CHECKPOINTS) + 3  # + the map / NaN model / report cases
    print(f"bad-input cases: {len(CASES)} record-level, {len(WHOLE_RUN)} whole-run, {len(CHECKPOINTS)} checkpoint; "
          f"{total} in all")
    assert len(CASES) >= 40


# --------------------------------------------------------------------------- whole-run inputs

def _csv_bad_header(tmp):
    (tmp / "m.csv").write_text("path,label\na.png,red\n")
    return tmp / "m.csv"


def _file(name, content):
    def make(tmp):
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return tmp / name
    return make


WHOLE_RUN = [
    ("empty-manifest", _file("m.jsonl", ""), "has no records"),
    ("blank-lines-manifest", _file("m.jsonl", "\n\n  \n"), "has no records"),
    ("header-only-manifest", _file("m.jsonl", '{"classes": ["a"]}\n'),
     "has no records"),
    ("wrong-csv-header", _csv_bad_header, "wrong CSV header"),
    ("missing-manifest", lambda t: t / "nope.jsonl", "Manifest not found"),
    ("not-utf8-manifest", _file("m.jsonl", b"\xff\xfe\x00bad"), "not UTF-8"),
    ("unsupported-type", _file("m.txt", "x"), "Unsupported data set"),
    ("bad-header-fields", _file("m.jsonl", '{"classes": ["a"], "extra": 1}\n'),
     "the header line may only hold"),
    ("duplicate-classes", _file("m.jsonl", '{"classes": ["a", "a"]}\n{"image": "x.png"}\n'), "m.jsonl"),
    ("every-image-bad", _file("m.jsonl", '{"image": "gone.png", "boxes": [[0, 0, 4, 4]]}\n'),
     "could be scored"),
    ("nothing-to-score", _file("m.jsonl", '{"image": "gone.png"}\n'),
     "Nothing to score"),
]


@pytest.mark.parametrize("name, make, fragment", WHOLE_RUN, ids=[w[0] for w in WHOLE_RUN])
def test_whole_run_inputs_exit_2_without_traceback(tmp_path, name, make, fragment):
    data = make(tmp_path)
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--arch", "vit_tiny", "--depth", "1", "--image-size", "32",
                                  "--patch-size", "8", "--methods", "gradcam", "--out", str(tmp_path / "o"), "--no-report"])
    assert r.exit_code == 2, r.output
    assert fragment in r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)


# --------------------------------------------------------------------------- checkpoints

def _tiny_sd(**kw):
    from auditor.models import create_model

    torch.manual_seed(0)
    return create_model("vit_tiny", **{"depth": 1, "image_size": 32, "patch_size": 8, "num_classes": 3, **kw}).state_dict()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def _ck_truncated(t):
    torch.save(_tiny_sd(), t / "good.pth")
    (t / "ck.pth").write_bytes((t / "good.pth").read_bytes()[:5000])
    return t / "ck.pth"


def _ck_evil(t):
    import pickle

    with open(t / "ck.pth", "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    return t / "ck.pth"


def _ck_safetensors_cut(t):
    from safetensors.torch import save_file

    save_file(_tiny_sd(), t / "good.safetensors")
    (t / "ck.safetensors").write_bytes((t / "good.safetensors").read_bytes()[:100])
    return t / "ck.safetensors"


CHECKPOINTS = [
    ("missing", lambda t: t / "nowhere.pth", "Checkpoint not found"),
    ("empty", _file("ck.pth", b""), "Cannot read checkpoint"),
    ("text", _file("ck.pth", "not a checkpoint"), "Cannot read checkpoint"),
    ("truncated", _ck_truncated, "truncated"),
    ("truncated-safetensors", _ck_safetensors_cut, "Cannot read safetensors checkpoint"),
    ("list-not-state-dict", lambda t: torch.save([1, 2], t / "ck.pth") or t / "ck.pth", "is not a checkpoint"),
    ("no-tensors", lambda t: torch.save({"epoch": 3}, t / "ck.pth") or t / "ck.pth", "holds no tensors"),
    ("other-architecture", lambda t: torch.save(CornerCNN().state_dict(), t / "ck.pth") or t / "ck.pth",
     "does not fit the model"),
    ("other-width", lambda t: torch.save(_tiny_sd(embed_dim=48, num_heads=3), t / "ck.pth") or t / "ck.pth",
     "shape mismatch"),
    ("malicious-pickle", _ck_evil, "Refused to unpickle"),
]


@pytest.mark.parametrize("name, make, fragment", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoints_exit_2_without_traceback(tmp_path, monkeypatch, name, make, fragment):
    monkeypatch.chdir(tmp_path)
    data = write_square_set(tmp_path / "data", n=2)
    ck = make(tmp_path)
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--arch", "vit_tiny", "--depth", "1", "--image-size", "32",
                                  "--patch-size", "8", "--checkpoint", str(ck), "--methods", "gradcam",
                                  "--out", str(tmp_path / "o"), "--no-report"])
    assert r.exit_code == 2, r.output
    assert fragment in r.output and "Traceback" not in r.output
    assert not (tmp_path / "pwned_by_pickle").exists()


# --------------------------------------------------------------------------- maps that cannot be scored

def _nan_on_green() -> nn.Module:
    """colour_vit, but every image with green pixels gives NaN activations (a broken model)."""
    model = _vit()

    def poison(module, inputs, output):
        green = (inputs[0][:, 1] > 0.9).flatten(1).any(1)
        return torch.where(green.view(-1, *([1] * (output.ndim - 1))), torch.full_like(output, float("nan")), output)

    model.patch_embed.register_forward_hook(poison)
    return model


def test_nan_and_constant_maps_are_recorded_with_a_reason(tmp_path):
    green = [json.dumps({"image": f"g{i}.png", "label": "red", "boxes": BOX}) for i in range(2)]
    data = write_square_set(tmp_path / "data", n=4, extra_lines=green)
    for i in range(2):
        img = _red_square()
        img[0:16, 0:16] = (0, 255, 0)
        Image.fromarray(img).save(tmp_path / "data" / f"g{i}.png")
    res = run_audit(data, out=tmp_path / "nan", model=_nan_on_green(), methods=["gradcam"], batch_size=3,
                    mean=(0, 0, 0), std=(1, 1, 1))
    rows = {r["id"]: r for r in res.rows}
    for i in range(2):
        r = rows[f"g{i}.png"]
        assert r["error"] is None and "NaN or infinite" in r["map_status"]["gradcam"]
        assert all(v is None for v in r["metrics"]["gradcam"].values())
        assert r["metrics"]["centre"]["pointing_game"] is not None  # baselines still scored
    assert all(rows[f"img{i:03d}.png"]["metrics"]["gradcam"]["pointing_game"] == 1.0 for i in range(4))
    s = res.data["summary"]["gradcam"]["pointing_game"]
    assert (s["n"], s["n_nan"], s["mean"]) == (4, 2, 1.0)

    class ZeroHead(CornerCNN):  # zero gradients: Grad-CAM is constant
        def __init__(self):
            super().__init__()
            with torch.no_grad():
                self.head.weight.zero_()

    res = run_audit(data, out=tmp_path / "zero", model=ZeroHead(), methods=["gradcam"], image_size=32,
                    mean=(0, 0, 0), std=(1, 1, 1))
    assert all("constant" in r["map_status"]["gradcam"] for r in res.rows)
    s = res.data["summary"]["gradcam"]["pointing_game"]
    assert s["n"] == 0 and s["n_nan"] == 6 and s["mean"] is None  # never a silent 0 or 1


# --------------------------------------------------------------------------- report and output safety

def test_hostile_class_and_model_names_are_escaped_and_nothing_leaves_out(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    bad = "<script>alert(1)</script>"
    Image.fromarray(_red_square()).save(root / "a.png")
    Image.fromarray(_red_square()).save(root / "b.png")
    lines = [json.dumps({"classes": [bad, "<b>x</b>", "c"]}),
             json.dumps({"image": "a.png", "id": "../../../escape", "label": bad, "boxes": BOX,
                         "meta": {"note": bad}}),
             json.dumps({"image": "b.png", "id": "/tmp/abs-escape", "label": 1, "boxes": BOX})]
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    Hostile = type(bad, (nn.Module,), {"num_classes": 3, "forward": lambda self, x: self.inner(x)})
    model = Hostile()
    model.inner = _vit()
    model.default_cfg = model.inner.default_cfg
    model.class_names = [bad, "<b>x</b>", "c"]  # hostile names on the model's side too (the report shows them)
    before = {p for p in tmp_path.rglob("*")}
    res = run_audit(root / "m.jsonl", out=tmp_path / "out", model=model, methods=["gradcam"], report=True)
    assert res.data["counts"]["ok"] == 2
    after = {p for p in tmp_path.rglob("*")}
    assert all((tmp_path / "out") in p.parents or p == tmp_path / "out" for p in after - before)
    assert not Path("/tmp/abs-escape").exists()
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert bad not in page and "<b>x</b>" not in page
    assert html.escape(bad) in page
