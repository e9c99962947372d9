"""Token maps packed per batch in ``token_maps.npz`` (auditor.savers), and the old layout still read."""

from __future__ import annotations

import zipfile

import numpy as np

from auditor import savers
from auditor.savers import MapFile, MapWriter, PartedMapWriter, load_maps, read_map


def _maps(n: int, shape=(2, 3), offset: float = 0.0) -> list[np.ndarray]:
    return [np.arange(6, dtype=np.float32).reshape(shape) / 7 + i + offset for i in range(n)]


def test_packed_maps_read_back_equal_one_array_per_method_and_shape(tmp_path):
    grad, roll = _maps(3), _maps(3, offset=100.0)
    odd = np.full((4, 4), -1.5, dtype=np.float32)  # another shape in the same batch: its own array
    with MapWriter(tmp_path, full=False) as w:
        for i in range(3):
            w.add("gradcam", f"img{i}", grad[i])
            w.add("rollout", f"img{i}", roll[i])
        w.add("gradcam", "big", odd)
    names = zipfile.ZipFile(tmp_path / "token_maps.npz").namelist()
    assert names == ["packed/gradcam/000000000.0.maps.npy", "packed/gradcam/000000000.0.ids.npy",
                     "packed/gradcam/000000000.1.maps.npy", "packed/gradcam/000000000.1.ids.npy",
                     "packed/rollout/000000000.0.maps.npy", "packed/rollout/000000000.0.ids.npy"]
    with np.load(tmp_path / "token_maps.npz") as z:  # plain npz: numpy reads it without the auditor
        assert z["packed/gradcam/000000000.0.maps"].shape == (3, 2, 3)
        assert z["packed/gradcam/000000000.0.ids"].tolist() == ["img0", "img1", "img2"]
    with MapFile(tmp_path / "token_maps.npz") as f:
        for i in range(3):
            np.testing.assert_array_equal(f.get("gradcam", f"img{i}"), grad[i])
            np.testing.assert_array_equal(f.get("rollout", f"img{i}"), roll[i])
        np.testing.assert_array_equal(f.get("gradcam", "big"), odd)
        assert f.get("gradcam", "nope") is None and f.get("eigencam", "img0") is None
        got = f.get("gradcam", "img1")
        got[:] = 0  # a copy: the cached array is untouched
        np.testing.assert_array_equal(f.get("gradcam", "img1"), grad[1])
    everything = load_maps(tmp_path / "token_maps.npz")
    assert sorted(everything) == sorted([f"gradcam/img{i}" for i in range(3)] + ["gradcam/big"]
                                        + [f"rollout/img{i}" for i in range(3)])
    assert everything["rollout/img2"][1, 2] == np.float32(5 / 7 + 2 + 100)


def test_a_whole_file_writer_flushes_every_flush_maps_and_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(savers, "FLUSH", 2)
    maps = _maps(5)
    with MapWriter(tmp_path, full=False) as w:
        for i, m in enumerate(maps):
            w.add("gradcam", f"id/{i}", m)  # an id with a slash
    names = [n for n in zipfile.ZipFile(tmp_path / "token_maps.npz").namelist() if n.endswith(".maps.npy")]
    assert names == [f"packed/gradcam/00000000{k}.0.maps.npy" for k in range(3)]  # 2 + 2 + 1 maps
    for i, m in enumerate(maps):
        np.testing.assert_array_equal(read_map(tmp_path / "token_maps.npz", "gradcam", f"id/{i}"), m)


def test_the_same_maps_give_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        with MapWriter(tmp_path / name, full=True) as w:
            for i, m in enumerate(_maps(4)):
                w.add("gradcam", f"img{i}", m, m * 2)
    for f in ("token_maps.npz", "maps.npz"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # maps.npz (--save-maps) keeps one entry per map, keys <method>/<image id>
    with np.load(tmp_path / "a" / "maps.npz") as z:
        np.testing.assert_array_equal(z["gradcam/img3"], _maps(4)[3] * 2)


def test_parts_merge_into_one_file_in_batch_order(tmp_path):
    writer = PartedMapWriter(tmp_path, full=False)
    maps = _maps(5)
    for start in (3, 0):  # parts finish out of order; the merge follows the starts given
        with writer.batch(start) as part:
            for i in range(start, min(start + 3, 5)):
                part.add("gradcam", f"img{i}", maps[i])
    writer.merge([0, 3])
    assert [n for n in zipfile.ZipFile(tmp_path / "token_maps.npz").namelist() if n.endswith("maps.npy")] == [
        "packed/gradcam/000000000.0.maps.npy", "packed/gradcam/000000003.0.maps.npy"]
    got = load_maps(tmp_path / "token_maps.npz")
    assert list(got) == [f"gradcam/img{i}" for i in range(5)]
    for i in range(5):
        np.testing.assert_array_equal(got[f"gradcam/img{i}"], maps[i])


def test_the_old_one_entry_per_map_layout_is_still_read(tmp_path):
    old = tmp_path / "token_maps.npz"
    np.savez(old, **{"gradcam/img0": np.eye(3, dtype=np.float32), "rollout/img0": np.ones((2, 2), np.float32)})
    with MapFile(old) as f:
        np.testing.assert_array_equal(f.get("gradcam", "img0"), np.eye(3))
        assert f.get("gradcam", "img1") is None
    assert sorted(load_maps(old)) == ["gradcam/img0", "rollout/img0"]
    assert not MapFile(tmp_path / "missing.npz").available and MapFile(tmp_path / "missing.npz").get("a", "b") is None
