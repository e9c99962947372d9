"""Data sources -> records: manifests (JSONL / CSV), class folders, FewTURE, COCO, path rules."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from auditor.data import Box, load_dataset
from auditor.data.segmentation import RLE
from auditor.errors import DataError


def png(path, width=6, height=4, seed=0):
    """A small random RGB image file (its format follows the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def jsonl(path, *lines):
    """Write a manifest: dicts are JSON-encoded, strings written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# ---------------------------------------------------------------- JSONL manifests


def test_jsonl_with_classes_header(tmp_path):
    m = jsonl(tmp_path / "manifest.jsonl", {"classes": ["cat", "dog"]},
              {"image": "img/a.png", "label": "dog", "boxes": [[1, 1, 3, 3], {"box": [0, 0.5, 2, 2], "label": "ear"}],
               "fixations": [[1.5, 2]], "gaze": "g/a.npy", "split": "support", "meta": {"k": 1}},
              "",
              {"image": "img/b.png", "id": "bee", "label": 0})
    ds = load_dataset(m)
    assert ds.errors == [] and ds.classes == ["cat", "dog"]
    assert ds.root == tmp_path and ds.source == m
    a, b = ds.records
    assert a.id == "img/a.png" and a.image == tmp_path / "img" / "a.png" and a.image.is_absolute()
    assert (a.label, a.label_name, a.split, a.meta, a.source) == (1, "dog", "support", {"k": 1}, "manifest.jsonl:2")
    assert a.boxes == (Box(1, 1, 3, 3, None), Box(0, 0.5, 2, 2, "ear"))
    assert a.fixations == ((1.5, 2.0),) and a.gaze == tmp_path / "g" / "a.npy"
    assert (b.id, b.label, b.label_name, b.boxes, b.fixations, b.gaze, b.source) == \
        ("bee", 0, "cat", (), None, None, "manifest.jsonl:4")


def test_class_list_from_sorted_names_or_argument(tmp_path):
    m = jsonl(tmp_path / "m.jsonl", {"image": "a.png", "label": "zebra"}, {"image": "b.png", "label": "ant"})
    ds = load_dataset(m)
    assert ds.classes == ["ant", "zebra"] and [r.label for r in ds.records] == [1, 0]
    ds = load_dataset(m, classes=["zebra", "yak", "ant"])
    assert [r.label for r in ds.records] == [0, 2]


def test_header_and_argument_must_agree(tmp_path):
    m = jsonl(tmp_path / "m.jsonl", {"classes": ["a", "b"]}, {"image": "x.png", "label": "a"})
    assert load_dataset(m, classes=["a", "b"]).records[0].label == 0
    with pytest.raises(DataError, match="differs"):
        load_dataset(m, classes=["b", "a"])


def test_integer_labels_without_class_list(tmp_path):
    ds = load_dataset(jsonl(tmp_path / "m.jsonl", {"image": "x.png", "label": 7}))
    assert ds.classes == [] and (ds.records[0].label, ds.records[0].label_name) == (7, None)


GOOD_A = {"image": "a.png", "id": "a", "label": "cat"}
GOOD_C = {"image": "c.png", "label": 1, "boxes": [[0, 0, 2, 2]]}


@pytest.mark.parametrize("line, fragment", [
    ('{"image": "b.png", "label": ', "invalid JSON"),
    ("[1, 2]", "expected a JSON object per line"),
    ({"image": "b.png", "label": "cow"}, 'unknown class name "cow"'),
    ({"image": "b.png", "label": 2}, "label index 2 is out of range (0..1)"),
    ({"image": "b.png", "label": 1.5}, "label must be a class index or a class name"),
    ({"image": "b.png", "boxes": [[1, 2, 3]]}, "box 1 [1, 2, 3] has 3 values, expected 4"),
    ({"image": "b.png", "boxes": [[0, 0, "a", 4]]}, "box 1 [0, 0, \"a\", 4] has a non-numeric coordinate"),
    ('{"image": "b.png", "boxes": [[0, 0, NaN, 4]]}', "box 1 [0, 0, NaN, 4] has a NaN or infinite coordinate"),
    ({"image": "b.png", "boxes": [[0, 0, 1, 1], [10, 5, 3, 9]]}, "box 2 [10, 5, 3, 9] has x1 <= x0"),
    ({"image": "b.png", "boxes": [[0, 5, 3, 5]]}, "box 1 [0, 5, 3, 5] has y1 <= y0"),
    ({"image": "b.png", "fixations": [[1]]}, "fixation 1 [1] has 1 values, expected 2"),
    ({"image": "b.png", "fixations": [[1, True]]}, "fixation 1 [1, true] has a non-numeric coordinate"),
    ({"image": "b.png", "id": "a"}, 'duplicate id "a" (first used on line 2)'),
    ({"id": "b"}, 'missing the required field "image"'),
    ({"image": "b.png", "box": [0, 0, 1, 1]}, "unknown field(s) ['box']"),
    ({"image": "b.png", "split": "train"}, "split must be one of support, query"),
    ({"image": "b.png", "meta": [1]}, "meta must be a JSON object"),
    ({"classes": ["x"]}, "header must be the first line"),
])
def test_bad_record_is_reported_and_others_load(tmp_path, line, fragment):
    m = jsonl(tmp_path / "manifest.jsonl", {"classes": ["cat", "dog"]}, GOOD_A, line, GOOD_C)
    ds = load_dataset(m)
    assert [r.id for r in ds.records] == ["a", "c.png"]
    assert ds.records[1].boxes == (Box(0, 0, 2, 2),) and ds.records[1].label_name == "dog"
    (err,) = ds.errors
    assert err.source == "manifest.jsonl:3" and err.reason.startswith("manifest.jsonl:3: ")
    assert fragment in err.reason


def test_bad_box_message_is_exact(tmp_path):
    m = jsonl(tmp_path / "manifest.jsonl", GOOD_A, {"image": "a.png", "id": "b"},
              {"image": "b.png", "boxes": [[0, 0, 1, 1], [10, 5, 3, 9]]})
    (err,) = load_dataset(m, classes=["cat"]).errors
    assert err.reason == "manifest.jsonl:3: box 2 [10, 5, 3, 9] has x1 <= x0"
    assert (err.id, err.image) == ("b.png", tmp_path / "b.png")


def test_empty_or_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="has no records"):
        load_dataset(jsonl(tmp_path / "m.jsonl", {"classes": ["a"]}, ""))
    with pytest.raises(DataError, match="Manifest not found: .*nope.jsonl"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="class list must be a list of non-empty strings"):
        load_dataset(jsonl(tmp_path / "h.jsonl", {"classes": "cat"}, GOOD_A))


# ---------------------------------------------------------------- CSV manifests


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_csv_manifest(tmp_path):
    m = write_csv(tmp_path / "m.csv", [
        ["image", "id", "label", "boxes", "fixations", "gaze", "split"],
        ["img/a.png", "", "1", "[[1, 2, 3, 4]]", "[[0.5, 1.5]]", "g.png", "query"],
        ["img/b.png", "b", "cat", "", "", "", ""],
        ["img/c.png", "c", "dog", "[[1, 2", "", "", ""],
    ])
    ds = load_dataset(m, classes=["cat", "dog"])
    a, b = ds.records
    assert (a.id, a.label, a.label_name, a.split, a.source) == ("img/a.png", 1, "dog", "query", "m.csv:2")
    assert a.boxes == (Box(1, 2, 3, 4),) and a.fixations == ((0.5, 1.5),) and a.gaze == tmp_path / "g.png"
    assert (b.id, b.label, b.boxes, b.fixations, b.gaze, b.split) == ("b", 0, (), None, None, None)
    (err,) = ds.errors
    assert err.reason.startswith("m.csv:4: boxes cell is not valid JSON")


def test_csv_without_image_column(tmp_path):
    m = write_csv(tmp_path / "m.csv", [["path", "label"], ["a.png", "0"]])
    with pytest.raises(DataError, match=r"wrong CSV header: expected columns image,id,.* got path,label"):
        load_dataset(m)


# ---------------------------------------------------------------- the data root


def test_paths_outside_the_root_are_refused_unless_allowed(tmp_path):
    outside = png(tmp_path / "outside.png")
    data = tmp_path / "data"
    png(data / "in.png")
    os.symlink(outside, data / "link.png")
    m = jsonl(data / "m.jsonl", {"image": "in.png"}, {"image": "../outside.png"}, {"image": str(outside), "id": "abs"},
              {"image": "link.png"}, {"image": "sub/../in.png", "id": "again"},
              {"image": "in.png", "id": "g", "gaze": "../outside.png"})
    ds = load_dataset(m)
    assert [r.id for r in ds.records] == ["in.png", "again"]
    assert ds.records[1].image == data / "in.png"
    assert [e.source for e in ds.errors] == ["m.jsonl:2", "m.jsonl:3", "m.jsonl:4", "m.jsonl:6"]
    for e in ds.errors:
        assert "outside the data root" in e.reason and "--allow-outside-root" in e.reason
    assert "gaze path" in ds.errors[-1].reason
    ds = load_dataset(m, allow_outside_root=True)
    assert ds.errors == [] and [r.image for r in ds.records][:4] == [data / "in.png", outside, outside,
                                                                     data / "link.png"]
    assert ds.records[1].id == outside.as_posix()  # outside the root: the id is the absolute path


# ---------------------------------------------------------------- folders


def test_class_folders(tmp_path):
    png(tmp_path / "dog" / "b.png")
    png(tmp_path / "cat" / "z.jpg")
    png(tmp_path / "cat" / "a.PNG")
    png(tmp_path / "cat" / ".hidden.png")
    png(tmp_path / ".git" / "x.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.classes == ["cat", "dog", "empty"] and ds.errors == []
    assert [(r.id, r.label, r.label_name) for r in ds.records] == \
        [("cat/a.PNG", 0, "cat"), ("cat/z.jpg", 0, "cat"), ("dog/b.png", 1, "dog")]
    assert ds.records[0].image == tmp_path / "cat" / "a.PNG"


def test_class_folder_symlink_outside_root(tmp_path):
    png(tmp_path / "elsewhere" / "x.png")
    png(tmp_path / "data" / "cat" / "a.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "dog")
    ds = load_dataset(tmp_path / "data")
    assert [r.id for r in ds.records] == ["cat/a.png"]
    assert [e.id for e in ds.errors] == ["dog/x.png"] and "outside the data root" in ds.errors[0].reason
    assert len(load_dataset(tmp_path / "data", allow_outside_root=True).records) == 2


def test_fewture_layout(tmp_path):
    for split, classes in (("train", "ab"), ("test", "cd")):
        for c in classes:
            png(tmp_path / split / c / "0.png")
    ds = load_dataset(tmp_path)
    assert ds.classes == ["c", "d"] and [r.id for r in ds.records] == ["c/0.png", "d/0.png"]
    assert ds.records[0].meta == {"fewture_split": "test"} and ds.records[0].image == tmp_path / "test" / "c" / "0.png"
    assert load_dataset(tmp_path, split="train").classes == ["a", "b"]
    with pytest.raises(DataError, match="no split folder 'val'; this data set has train, test"):
        load_dataset(tmp_path, split="val")


def test_folder_without_classes(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- COCO


def test_coco_instances(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "images" / "c.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 6, "height": 4}, {"id": 2, "file_name": "b.png"},
                   {"id": 3, "file_name": "c.png"}, {"id": 4, "file_name": "d.png"}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [1, 0.5, 2, 3], "category_id": 7},   # area 6: the label
            {"id": 11, "image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 3},
            # a crowd: an object of its category, larger than the dog but it does not choose the label
            {"id": 12, "image_id": 1, "bbox": [0, 0, 6, 4], "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [4, 6], "counts": [0, 24]}},
            {"id": 13, "image_id": 2, "bbox": [0, 0, -1, 2], "category_id": 3},
            {"id": 14, "image_id": 99, "bbox": [0, 0, 1, 1], "category_id": 3},
            {"id": 15, "image_id": 3, "bbox": [0, 0, 2, 2], "category_id": 7, "iscrowd": 1},  # only a crowd: it labels
            {"id": 16, "image_id": 4, "bbox": [0, 0, 2, 2], "category_id": 7, "segmentation": [[0, 0, 1, 1]]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    ds = load_dataset(path)
    assert ds.classes == ["cat", "dog"]  # sorted by category id: 3, 7
    a, c = ds.records
    assert a.boxes == (Box(1.0, 0.5, 3.0, 3.5, "dog"), Box(0.0, 0.0, 1.0, 1.0, "cat"),
                       Box(0.0, 0.0, 6.0, 4.0, "cat", RLE(4, 6, (0, 24))))
    assert (a.id, a.label, a.label_name, a.image) == ("a.png", 1, "dog", tmp_path / "a.png")
    assert a.meta == {"coco_id": 1, "width": 6, "height": 4}
    assert (c.image, c.label, c.boxes) == (tmp_path / "images" / "c.png", 1, (Box(0.0, 0.0, 2.0, 2.0, "dog"),))
    reasons = {e.id: e.reason for e in ds.errors}
    assert "annotation 13: bbox [0, 0, -1, 2] has w <= 0 or h <= 0" in reasons["b.png"]
    assert reasons["d.png"] == ("instances.json:images[3]: instances.json:annotations[6]: annotation 16: polygon 1 "
                                "[0, 0, 1, 1] must be a list [x1, y1, x2, y2, ...] of at least 3 points")
    assert "unknown image_id 99" in reasons["annotation[4]"]


def test_not_coco_or_unsupported(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(DataError, match="not a COCO instances file"):
        load_dataset(tmp_path / "x.json")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match=r"Unsupported data set .*x.txt: give a manifest \(.jsonl or .csv\)"):
        load_dataset(tmp_path / "x.txt")
