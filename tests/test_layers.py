"""Per-layer scores: which layer's attention agrees with the annotation."""

from __future__ import annotations

import json

import jsonschema
import pytest
import numpy as np
import torch

from auditor.layers import score_layers, summarise_layers
from auditor.results import schema_path
from auditor.runner import run_audit

from conftest import tiny_vit
from test_run import write_square_set


def test_score_layers_by_hand():
    # 2 layers on a 2x2 grid: layer 0 constant (unscorable), layer 1 peaks on patch (0, 1)
    per_layer = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.0, 1.0], [0.0, 0.0]]]])  # B=1 x L=2 x 2 x 2
    mask = np.zeros((4, 4), bool)
    mask[:2, 2:] = True  # the top-right quarter = patch (0, 1)
    out = score_layers({"cls_attention": {"per_layer": per_layer}, "gradcam": {}}, 0, mask,
                       {"cls_attention": "minmax", "gradcam": "relu_minmax"})
    assert list(out) == ["cls_attention"]
    assert out["cls_attention"]["pointing_game"] == [None, 1.0]
    # bilinear 2x2 -> 4x4 (align_corners=False): columns [0, .25, .75, 1] scaled by the row
    # weights [1, .75, .25, 0]; min-max keeps it. Mass in rows 0-1, cols 2-3:
    # (.75 + 1) * (1 + .75) = 3.0625 of a total (0 + .25 + .75 + 1) * (1 + .75 + .25) = 4
    assert out["cls_attention"]["relevance_mass"][1] == pytest.approx(3.0625 / 4)
    assert score_layers({"cls_attention": {"per_layer": per_layer}}, 0, None, {"cls_attention": "minmax"}) == {}


def test_summarise_layers():
    rows = [{"per_layer": {"m": {"pointing_game": [1.0, None]}}}, {"per_layer": {"m": {"pointing_game": [0.0, 1.0]}}}]
    s = summarise_layers(rows)["m"]["pointing_game"]
    assert [x["mean"] for x in s] == [0.5, 1.0] and [x["n"] for x in s] == [2, 1]
    # a method whose maps were undefined at every layer (constant maps) has nothing to plot
    assert summarise_layers([{"per_layer": {"m": {"pointing_game": [None, None]}}}]) == {}


def test_a_vit_audit_reports_every_layer(tmp_path):
    data = write_square_set(tmp_path / "d", n=6)
    model = tiny_vit(num_classes=3, class_names=["red", "green", "blue"])  # depth 2
    res = run_audit(data, out=tmp_path / "o", model=model, methods=["cls_attention"], image_size=32)
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    layers = doc["per_layer"]["cls_attention"]["pointing_game"]
    assert len(layers) == 2 and all(x["n"] == 6 for x in layers)
    # the last layer's per-layer score is the method's own score
    assert layers[-1]["mean"] == res.summary["cls_attention"]["pointing_game"].mean
    from auditor.report import render_report

    html = render_report(res).read_text()
    assert "Which layer&#39;s attention agrees best" in html or "Which layer's attention agrees best" in html
