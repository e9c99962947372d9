"""Object masks: the target's own boxes (or any object), COCO segmentations, mask files in manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from auditor.cli import main
from auditor.data import Box, Record, check_mask_classes, load_annotations, load_dataset, load_mask, mask_boxes
from auditor.data.segmentation import RLE, Polygons, polygon_mask
from auditor.errors import AnnotationError, UsageError
from auditor.runner import run_audit

from test_run import CornerCNN

CORNER = {"image_size": 32, "mean": (0, 0, 0), "std": (1, 1, 1), "methods": ["gradcam"]}


def _record(**kw) -> Record:
    return Record(id="r", image=Path("/x/r.png"), source="m.jsonl:3", **kw)


# ---------------------------------------------------------------- which objects form the mask


def test_the_target_class_boxes_and_unlabelled_boxes_form_the_mask():
    rec = _record(label=1, label_name="dog",
                  boxes=(Box(0, 0, 1, 1, "dog"), Box(3, 3, 4, 4, "person"), Box(0, 3, 1, 4)))
    target = load_annotations(rec, (4, 4)).mask
    assert np.array_equal(np.argwhere(target), [[0, 0], [3, 0]])  # the dog and the unlabelled box
    every = load_annotations(rec, (4, 4), mask_classes="any").mask
    assert np.array_equal(np.argwhere(every), [[0, 0], [3, 0], [3, 3]])
    assert [i for i, _ in mask_boxes(rec)] == [1, 3] and [i for i, _ in mask_boxes(rec, "any")] == [1, 2, 3]


def test_box_labels_that_cannot_be_matched_are_errors_in_target_mode():
    none_of_them = _record(label=0, label_name="cat", boxes=(Box(0, 0, 1, 1, "dog"), Box(1, 1, 2, 2, "Cat")))
    with pytest.raises(AnnotationError, match=r"^r \(m.jsonl:3\): none of its 2 box\(es\) is a 'cat' \(their labels: "
                                              r"Cat, dog\): .* or pass --mask-classes any"):
        load_annotations(none_of_them, (4, 4))
    assert load_annotations(none_of_them, (4, 4), mask_classes="any").mask.sum() == 2
    no_name = _record(label=3, boxes=(Box(0, 0, 1, 1, "dog"),))  # an index without a class list
    with pytest.raises(AnnotationError, match="labelled \\(dog\\) but the record has no class name"):
        load_annotations(no_name, (4, 4))
    assert load_annotations(_record(boxes=(Box(0, 0, 1, 1),)), (4, 4)).mask.sum() == 1  # unlabelled: as before
    outside = _record(label=0, label_name="cat", boxes=(Box(0, 0, 1, 1, "cat"), Box(0, 0, 9, 1, "dog")))
    with pytest.raises(AnnotationError, match=r"box 2 \[0, 0, 9, 1\] lies outside the image"):  # not in the mask,
        load_annotations(outside, (4, 4))  # but wrong coordinates all the same


def test_mask_classes_must_be_target_or_any(tmp_path):
    assert check_mask_classes("any") == "any"
    with pytest.raises(UsageError, match="--mask-classes must be one of target, any, got 'all'"):
        check_mask_classes("all")
    with pytest.raises(UsageError, match="--mask-classes"):  # refused before anything is read
        run_audit(tmp_path / "nothing.jsonl", out=tmp_path / "o", mask_classes="all")


def test_a_segmentation_replaces_its_box():
    tri = Polygons(((0.0, 0.0, 4.0, 0.0, 0.0, 4.0),))
    rec = _record(label=0, label_name="dog", boxes=(Box(0, 0, 4, 4, "dog", tri),))
    mask = load_annotations(rec, (4, 4)).mask
    assert np.array_equal(mask, polygon_mask(tri.parts, (4, 4))) and 0 < mask.sum() < 16
    crowd = _record(label=0, label_name="dog", boxes=(Box(0, 0, 2, 2, "dog", RLE(2, 2, (1, 3))),))
    assert np.array_equal(load_annotations(crowd, (2, 2)).mask, [[False, True], [True, True]])
    with pytest.raises(AnnotationError, match=r"^r \(m.jsonl:3\): box 1: its RLE is 2x2 pixels"):
        load_annotations(crowd, (3, 2))


# ---------------------------------------------------------------- mask files


def _png(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def test_mask_images_and_npy(tmp_path):
    grey = np.zeros((4, 6), dtype=np.uint8)
    grey[1:3, 2:5] = 200  # any non-zero value is object
    assert np.array_equal(load_mask(_png(tmp_path / "m.png", grey), (4, 6)), grey > 0)
    np.save(tmp_path / "b.npy", grey > 0)
    np.save(tmp_path / "i.npy", (grey > 0).astype(np.int64))
    assert np.array_equal(load_mask(tmp_path / "b.npy", (4, 6)), grey > 0)
    assert np.array_equal(load_mask(tmp_path / "i.npy", (4, 6)), grey > 0)


def test_a_smaller_mask_is_resized_nearest_neighbour(tmp_path):
    half = np.array([[0, 1, 0],
                     [0, 0, 1]], dtype=np.uint8) * 255
    mask = load_mask(_png(tmp_path / "m.png", half), (4, 6))  # row r reads floor((r + 0.5) / 2), the same for columns
    assert np.array_equal(mask, np.kron(half > 0, np.ones((2, 2), dtype=bool)))
    odd = load_mask(_png(tmp_path / "o.png", np.ones((2, 3)) * 255), (5, 7))  # 7 / 3 vs 5 / 2: each side within 1 px
    assert odd.shape == (5, 7) and odd.all()


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "missing.png", "Mask not found: .*missing.png"),
    (lambda p: _png(p / "empty.png", np.zeros((4, 6))), "Mask .*empty.png is empty: no pixel is object"),
    (lambda p: np.save(p / "soft.npy", np.full((4, 6), 0.5)) or p / "soft.npy",
     r"Mask .*soft.npy must be bool or hold only 0 and 1, got values in \[0.5, 0.5\]; threshold it"),
    (lambda p: np.save(p / "three.npy", np.ones((4, 6, 3), bool)) or p / "three.npy", "must be a 2-D array"),
    (lambda p: _png(p / "rotated.png", np.ones((6, 4)) * 255),
     r"Mask .*rotated.png is 4x6 pixels \(width x height\), the image 6x4: another aspect ratio"),
    (lambda p: (p / "junk.png").write_bytes(b"not a png") and p / "junk.png", "Cannot read mask .*junk.png"),
])
def test_bad_mask_files(tmp_path, make, fragment):
    with pytest.raises(AnnotationError, match=fragment):
        load_mask(make(tmp_path), (4, 6))


def test_a_mask_that_vanishes_when_shrunk_is_an_error(tmp_path):
    big = np.zeros((8, 12), dtype=np.uint8)
    big[0, 0] = 255  # the 2x3 image's pixels read mask rows 2, 6 and columns 2, 6, 10
    with pytest.raises(AnnotationError, match=r"\(12x8\) is empty once resized to the image's 3x2 pixels"):
        load_mask(_png(tmp_path / "m.png", big), (2, 3))


def test_manifest_mask_field(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"image": "a.png", "label": "cat", "mask": "masks/a.png"}\n{"image": "b.png", "mask": "../b.png"}\n')
    ds = load_dataset(tmp_path / "m.jsonl")
    assert ds.records[0].mask == tmp_path / "masks" / "a.png"
    assert "mask path \"../b.png\" is outside the data root" in ds.errors[0].reason
    (tmp_path / "m.csv").write_text("image,label,mask\na.png,cat,masks/a.npy\n")
    assert load_dataset(tmp_path / "m.csv").records[0].mask == tmp_path / "masks" / "a.npy"


# ---------------------------------------------------------------- audits


def _grey(path: Path) -> str:
    _png(path, np.full((64, 64, 3), 128))
    return path.name


@pytest.fixture
def dog_and_person(tmp_path):
    """Two 64 px COCO images with a dog in the top-left corner, where CornerCNN's Grad-CAM peaks
    (about pixel (6, 6)), and a person elsewhere. In p.png the person is larger, so the image is
    labelled person; in d.png the dog is larger: labelled dog."""
    coco = {
        "images": [{"id": 1, "file_name": _grey(tmp_path / "p.png"), "width": 64, "height": 64},
                   {"id": 2, "file_name": _grey(tmp_path / "d.png"), "width": 64, "height": 64}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 18, "bbox": [0, 0, 20, 20], "segmentation": [[0, 0, 20, 0, 0, 20]]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [24, 24, 40, 40]},
            {"id": 3, "image_id": 2, "category_id": 18, "bbox": [0, 0, 40, 40]},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [44, 44, 20, 20],
             "segmentation": [[44, 44, 64, 44, 64, 64, 44, 64]]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    return tmp_path / "instances.json"


def _pointing(result) -> dict[str, tuple[str, float]]:
    return {r["id"]: (r["label_name"], r["metrics"]["gradcam"]["pointing_game"]) for r in result.rows}


def test_coco_map_on_the_dog_misses_the_person_but_hits_any_object(dog_and_person, tmp_path):
    target = run_audit(dog_and_person, out=tmp_path / "t", model=CornerCNN(), class_map={"dog": 0, "person": 1},
                       **CORNER)
    assert _pointing(target) == {"p.png": ("person", 0.0), "d.png": ("dog", 1.0)}
    assert target.data["settings"]["mask_classes"] == "target"
    every = run_audit(dog_and_person, out=tmp_path / "a", model=CornerCNN(), mask_classes="any",
                      class_map={"dog": 0, "person": 1}, **CORNER)
    assert _pointing(every) == {"p.png": ("person", 1.0), "d.png": ("dog", 1.0)}
    assert every.data["settings"]["mask_classes"] == "any"


def test_manifest_masks_are_scored_and_bad_ones_are_error_rows(tmp_path):
    corner, far = np.zeros((64, 64)), np.zeros((32, 32))
    corner[:16, :16], far[20:, 20:] = 255, 1
    _png(tmp_path / "masks" / "corner.png", corner)
    np.save(tmp_path / "masks" / "far.npy", far.astype(bool))  # half size: resized to 64 x 64
    _png(tmp_path / "masks" / "empty.png", np.zeros((64, 64)))
    lines = [{"image": _grey(tmp_path / "a.png"), "id": "corner", "label": 0, "mask": "masks/corner.png",
              "boxes": [[40, 40, 64, 64]]},  # an unlabelled box belongs to the record too: the mask is both
             {"image": "a.png", "id": "far", "label": 0, "mask": "masks/far.npy"},
             {"image": "a.png", "id": "missing", "label": 0, "mask": "masks/nope.png"},
             {"image": "a.png", "id": "empty", "label": 0, "mask": "masks/empty.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = run_audit(tmp_path / "m.jsonl", out=tmp_path / "o", model=CornerCNN(), **CORNER)
    rows = {r["id"]: r for r in res.rows}
    assert rows["corner"]["metrics"]["gradcam"]["pointing_game"] == 1.0
    assert rows["far"]["metrics"]["gradcam"]["pointing_game"] == 0.0
    assert rows["missing"]["error"].startswith("missing (m.jsonl:3): Mask not found: ")
    assert rows["missing"]["error"].split(": ")[2].endswith("masks/nope.png. Check the path (relative to the "
                                                            "manifest's folder).")
    assert rows["empty"]["error"] == f"empty (m.jsonl:4): Mask {tmp_path / 'masks' / 'empty.png'} is empty: no pixel " \
                                     "is object (non-zero)"


def test_cli_mask_classes_reaches_run_and_compare(dog_and_person, tmp_path, monkeypatch):
    (tmp_path / "toys.py").write_text("import sys\nsys.path.insert(0, %r)\nfrom test_run import CornerCNN\n"
                                      "def corner():\n    return CornerCNN()\n" % str(Path(__file__).parent))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes.csv").write_text("dog,0\nperson,1\n")
    common = ["--data", str(dog_and_person), "--methods", "gradcam", "--image-size", "32", "--class-map", "classes.csv"]
    r = CliRunner().invoke(main, ["run", "--model", "toys:corner", "--mean", "0,0,0", "--std", "1,1,1", "--out", "run",
                                  "--mask-classes", "any", "--no-report", *common])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["settings"]["mask_classes"] == "any"
    r = CliRunner().invoke(main, ["compare", "--model-a", "toys:corner", "--model-b", "toys:corner", "--out", "cmp",
                                  "--mask-classes", "any", *common])
    assert r.exit_code == 0, r.output
    for side in ("a", "b"):
        assert json.loads((tmp_path / "cmp" / side / "results.json").read_text())["settings"]["mask_classes"] == "any"
    r = CliRunner().invoke(main, ["compare", "--results-a", "cmp/a/results.json", "--results-b", "cmp/b/results.json",
                                  "--out", "c2", "--mask-classes", "any"])
    assert r.exit_code == 2 and "--mask-classes apply when compare runs the audits" in r.output
    r = CliRunner().invoke(main, ["run", "--model", "toys:corner", "--out", "x", "--mask-classes", "all", *common])
    assert r.exit_code == 2 and "'all' is not one of 'target', 'any'" in r.output


def test_segmentations_that_cover_no_pixel_are_an_error():
    speck = Polygons(((0.1, 0.1, 0.3, 0.1, 0.2, 0.3),))  # holds no pixel centre
    speck = _record(label=0, label_name="dog", boxes=(Box(0, 0, 1, 1, "dog", speck),))
    with pytest.raises(AnnotationError, match=r"its objects' segmentations cover no pixel centre of the 4x4 image"):
        load_annotations(speck, (4, 4))


def test_the_report_draws_the_mask_that_was_scored(dog_and_person):
    from auditor.report.gallery import References

    dog = polygon_mask([[0, 0, 20, 0, 0, 20]], (64, 64))
    person = np.zeros((64, 64), dtype=bool)
    person[24:64, 24:64] = True
    target, _ = References({"data": str(dog_and_person), "mask_classes": "target"}).of("p.png", (64, 64))
    assert np.array_equal(target, person)
    every, _ = References({"data": str(dog_and_person), "mask_classes": "any"}).of("p.png", (64, 64))
    assert np.array_equal(every, person | dog)
    old, _ = References({"data": str(dog_and_person)}).of("p.png", (64, 64))  # results from before the setting
    assert np.array_equal(old, every)
