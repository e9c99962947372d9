"""Rows in rows.jsonl / results.csv keep 8 significant digits (auditor.results.row_json): shorter lines,
summaries that agree with full-precision rows to 7 significant digits."""

from __future__ import annotations

import json

import numpy as np

from auditor.results import ROW_DIGITS, row_json
from auditor.scoring import summarise


def test_row_floats_are_rounded_to_8_significant_digits_and_nothing_else_changes():
    row = {"id": "a", "label": 3, "prediction_score": 0.9237678050994873, "error": None,
           "metrics": {"gradcam": {"relevance_mass": 0.18863896896296348, "pointing_game": 1.0, "nss": -2.0719554049277633,
                                   "auc_roc": float("nan"), "tiny": 1.2345678901e-9, "big": 123456789.123}},
           "map_status": {"gradcam": "constant map"}, "support": ["x", "y"]}
    line = row_json(row)
    assert json.loads(line) == {
        "id": "a", "label": 3, "prediction_score": 0.92376781, "error": None,
        "metrics": {"gradcam": {"relevance_mass": 0.18863897, "pointing_game": 1.0, "nss": -2.0719554,
                                "auc_roc": None, "tiny": 1.2345679e-09, "big": 123456790.0}},
        "map_status": {"gradcam": "constant map"}, "support": ["x", "y"]}
    assert '"pointing_game":1.0' in line and '"label":3,' in line  # floats stay floats, ints ints; no spaces
    assert len(line) < len(json.dumps(row).replace("NaN", "null"))


def test_summary_means_from_rounded_rows_agree_with_full_precision_to_7_digits():
    rng = np.random.default_rng(0)
    rows = [{"metrics": {m: {"relevance_mass": float(rng.random()), "nss": float(rng.normal(1.5, 2.0)),
                             "pointing_game": float(rng.integers(2))} for m in ("gradcam", "rollout")}}
            for _ in range(2000)]
    full = summarise(rows, seed=0)
    rounded = summarise([json.loads(row_json(r)) for r in rows], seed=0)
    assert ROW_DIGITS == 8
    for m, mets in full.items():
        for k, s in mets.items():
            r = rounded[m][k]
            assert r["n"] == s["n"]
            for stat in ("mean", "ci_low", "ci_high"):
                # each value moves by at most 5e-8 of itself, so does any mean of them
                assert abs(r[stat] - s[stat]) <= 5e-8 * max(abs(s[stat]), 1e-12) + 5e-8 * 1e-3, (m, k, stat)
                assert f"{r[stat]:.6f}" == f"{s[stat]:.6f}"  # what the report and the gate's message show
