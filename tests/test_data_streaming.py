"""A manifest is streamed into compact records (auditor.data.records.RecordList): memory grows by
about a line's length per record, not by parsed Record objects (~1.2 KB each before)."""

from __future__ import annotations

import json
import pickle
import tracemalloc
from pathlib import Path

from auditor.batches import chunks
from auditor.data import Box, Record, load_dataset
from auditor.data.records import RecordList


def _manifest(path: Path, n: int) -> int:
    """``n`` records (a box, two fixations); returns the bytes of their lines."""
    with open(path, "w") as f:
        f.write(json.dumps({"classes": ["a", "b"]}) + "\n")
        for i in range(n):
            f.write(json.dumps({"image": f"images/{i:06d}.png", "id": f"img{i:06d}", "label": "ab"[i % 2],
                                "boxes": [[1, 2, 30, 40]], "fixations": [[3.5, 4.25], [10.0, 12.5]]}) + "\n")
    return path.stat().st_size - len(json.dumps({"classes": ["a", "b"]})) - 1


def _load_bytes(path: Path, n: int) -> tuple[float, float]:
    """(retained, peak) bytes per record of load_dataset(path), as tracemalloc counts them."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ds = load_dataset(path)
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ds.records) == n
    return (cur - base) / n, (peak - base) / n


def test_loading_a_manifest_keeps_about_a_line_per_record_and_does_not_grow_with_size(tmp_path):
    small, big = 1000, 6000
    line = _manifest(tmp_path / "big.jsonl", big) / big  # 133 bytes a line
    _manifest(tmp_path / "small.jsonl", small)
    kept_small, _ = _load_bytes(tmp_path / "small.jsonl", small)
    kept, peak = _load_bytes(tmp_path / "big.jsonl", big)
    # measured: 239 B kept and 352 B peak a record (Record objects held: 1,250 and 2,440)
    assert kept <= 2.5 * line, (kept, line)
    assert peak <= 4 * line, (peak, line)
    assert kept <= 1.1 * kept_small  # per record: flat from 1,000 to 6,000 lines


def test_compact_records_rebuild_the_record_they_were_validated_as(tmp_path):
    _manifest(tmp_path / "m.jsonl", 3)
    ds = load_dataset(tmp_path / "m.jsonl")
    assert isinstance(ds.records, RecordList)
    expected = Record(id="img000001", image=tmp_path / "images" / "000001.png", label=1, label_name="b",
                      boxes=(Box(1.0, 2.0, 30.0, 40.0),), fixations=((3.5, 4.25), (10.0, 12.5)), source="m.jsonl:3")
    assert ds.records[1] == expected and ds.records[-2] == expected and ds.records[1].source == "m.jsonl:3"
    assert ds.records[1:] == [expected, ds.records[2]] and [r.id for r in ds.records] == [f"img00000{i}" for i in range(3)]
    assert pickle.loads(pickle.dumps(ds.records))[1] == expected  # the Ray engine ships records to its actors


def test_chunks_slice_records_when_asked():
    seen = []

    class Counting(list):
        def __getitem__(self, index):
            seen.append(index)
            return super().__getitem__(index)

    units = chunks(Counting(range(10)), 4)
    assert len(units) == 3 and seen == []  # nothing sliced yet
    rest = units[1:]
    assert len(rest) == 2 and list(rest) == [[4, 5, 6, 7], [8, 9]] and seen == [slice(4, 8), slice(8, 12)]
    assert units[0] == [0, 1, 2, 3] and units[-1] == [8, 9] and list(units[3:]) == []
