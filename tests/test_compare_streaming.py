"""Compare holds paired values as arrays (report.paired.Pairs) and writes comparison.json's images
item by item (compare.PairedImages, results.StreamedList): the output is the one the row-dict
version wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from test_report import make_audit

from auditor.compare import compare_results
from auditor.report.paired import pair_rows
from auditor.results import StreamedList, write_json

EXPECTED = Path(__file__).parent / "data" / "compare_small_expected.json"


def _close(got, want, where="") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for k in want:
            _close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (where, got, want)
    else:
        assert got == want, (where, got, want)


def test_comparison_json_equals_the_one_written_before_streaming(tmp_path):
    # expected: written by compare_results at commit 8a20768 (pairs of row dicts, images a list of
    # dicts) on the same two generated audits; floats compared to 1e-9 (map upsampling may differ in
    # the last bit between machines)
    a = make_audit(tmp_path / "a", n=12, seed=0)
    b = make_audit(tmp_path / "b", n=12, seed=0, corner=True)
    compare_results(a, b, out=tmp_path / "c", allow_different_data=True, report=False,
                    max_drop=["gradcam.pointing_game=0.05"])
    got = json.loads((tmp_path / "c" / "comparison.json").read_text())
    for side in ("a", "b"):
        got[side]["results"] = Path(got[side]["results"]).relative_to(tmp_path).as_posix()
    _close(got, json.loads(EXPECTED.read_text()))


def test_pairs_follow_a_and_count_the_unpaired():
    def row(i, v, error=None):
        return {"id": i, "image": f"{i}.png", "error": error, "metrics": {"m": {"k": v}}}

    rows_a = [row("x", 0.5), row("y", None), row("gone", 1.0), row("bad", 0.0, "broken"), row("z", 0.25)]
    rows_b = [row("z", 1.0), row("y", 0.75), row("x", 0.1), row("x", 0.0), row("new", 1.0)]  # B's last x counts
    pairs, counts = pair_rows(rows_a, rows_b, ["m"], ["k"])
    assert pairs.ids == ["x", "y", "z"] and counts == {"paired": 3, "only_a": 1, "only_b": 1}
    a, b = pairs.values[("m", "k")]
    np.testing.assert_array_equal(a, [0.5, np.nan, 0.25])
    np.testing.assert_array_equal(b, [0.0, 0.75, 1.0])
    assert pairs.images[1] == ("y.png", "y.png") and pairs.clusters == [None, None, None]


class _Squares(StreamedList):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {"i": i, "sq": {"v": i * i, "half": i / 2 if i else float("nan")}}


def test_a_streamed_list_is_written_as_the_same_bytes_as_a_list(tmp_path):
    for n in (0, 1, 3):
        data = {"head": {"x": [1, 2]}, "images": _Squares(n), "tail": True}
        write_json(tmp_path / "s.json", data)
        write_json(tmp_path / "l.json", {**data, "images": list(_Squares(n))})
        assert (tmp_path / "s.json").read_bytes() == (tmp_path / "l.json").read_bytes()
    assert json.loads((tmp_path / "s.json").read_text())["images"][0]["sq"]["half"] is None
