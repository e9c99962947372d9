"""The manifest parser never raises anything but DataError, whatever the lines hold."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.data import Dataset, parse_jsonl
from auditor.data.manifest import FIELDS
from auditor.errors import DataError

ROOT = Path(tempfile.gettempdir()) / "auditor-fuzz-root"  # never created: parsing does not need the files

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)
numbers = st.integers(-10, 10**20) | st.floats() | st.sampled_from(["1", True, None])
records = st.dictionaries(st.sampled_from(FIELDS + ("classes", "box")), values, max_size=6) | st.fixed_dictionaries(
    {"image": st.text(max_size=12), "label": values},
    optional={"boxes": st.lists(st.lists(numbers, max_size=5) | st.fixed_dictionaries({"box": st.lists(numbers)}),
                                max_size=3),
              "fixations": st.lists(st.lists(numbers, max_size=3), max_size=3), "id": values, "gaze": values})
lines = st.lists(records.map(json.dumps) | values.map(json.dumps) | st.text(max_size=30), max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines, st.none() | st.lists(st.text(max_size=4), max_size=3))
def test_parser_yields_records_errors_or_data_error(lines, classes):
    try:
        ds = parse_jsonl(lines, root=ROOT, classes=classes)
    except DataError:
        return
    assert isinstance(ds, Dataset)
    entries = [x for x in lines if x.strip()]
    header = 1 if entries and _is_header(entries[0]) else 0
    assert len(ds.records) + len(ds.errors) == len(entries) - header
    assert len({r.id for r in ds.records}) == len(ds.records)
    for r in ds.records:
        assert r.image.is_absolute() and all(b.x1 > b.x0 and b.y1 > b.y0 for b in r.boxes)


def _is_header(line: str) -> bool:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and "classes" in obj and "image" not in obj
