"""The report's method leaderboard: sorted best first by localisation, CIs shown, baselines marked
in place, readings against the centre baseline and a random pixel order (issue 18)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from auditor.report import render_report
from auditor.report.leaderboard import leaderboard_context

from test_report import make_audit


def st(mean, lo, hi, n=50):
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": n, "n_nan": 0}


SUMMARY = {
    "gradcam": {"pointing_game": st(0.49, 0.39, 0.59), "relevance_mass": st(0.21, 0.18, 0.24),
                "deletion_vs_random": st(0.05, 0.01, 0.09), "insertion_vs_random": st(-0.01, -0.03, 0.02),
                "relevance_rank": st(0.7, 0.6, 0.8)},
    "rollout": {"pointing_game": st(0.96, 0.90, 0.98), "relevance_mass": st(0.46, 0.44, 0.49),
                "deletion_vs_random": st(0.12, 0.08, 0.16), "insertion_vs_random": st(0.10, 0.06, 0.14)},
    "hirescam": {"pointing_game": st(0.49, 0.39, 0.59), "relevance_mass": st(0.65, 0.61, 0.69)},  # tie on pg
    "eigencam": {"pointing_game": st(float("nan"), None, None)},  # nothing valid: last
    "centre": {"pointing_game": st(0.43, 0.34, 0.53), "relevance_mass": st(0.19, 0.17, 0.21)},
    "random": {"pointing_game": st(0.14, 0.09, 0.22), "relevance_mass": st(0.11, 0.10, 0.12)},
}
METRICS = sorted({k for v in SUMMARY.values() for k in v})
METHODS = ["gradcam", "rollout", "hirescam", "eigencam"]


def test_rows_are_sorted_by_the_primary_metrics_with_the_baselines_in_place():
    board = leaderboard_context(SUMMARY, METHODS, METRICS)
    assert board["sorted_by"] == "pointing_game then relevance_mass"
    assert [r["method"] for r in board["rows"]] == ["rollout", "hirescam", "gradcam", "centre", "random", "eigencam"]
    assert [r["rank"] for r in board["rows"]] == ["1", "2", "3", "–", "–", "4"]
    assert [r["baseline"] for r in board["rows"]] == [False, False, False, True, True, False]
    assert [c["name"] for c in board["columns"]] == ["pointing_game", "relevance_mass", "deletion_vs_random",
                                                     "insertion_vs_random"]
    assert [c["group"] for c in board["columns"]] == ["localisation"] * 2 + ["faithfulness"] * 2


def test_cells_show_mean_and_ci_and_a_dash_where_nothing_was_measured():
    rows = {r["method"]: r for r in leaderboard_context(SUMMARY, METHODS, METRICS)["rows"]}
    assert rows["rollout"]["cells"][0] == {"mean": "0.960", "ci": "[0.900, 0.980]"}
    assert rows["centre"]["cells"][2] == {"mean": "–", "ci": ""}  # baselines get no faithfulness score
    assert rows["eigencam"]["cells"][0] == {"mean": "–", "ci": ""}


def test_readings_against_the_centre_baseline_and_a_random_order():
    rows = {r["method"]: r for r in leaderboard_context(SUMMARY, METHODS, METRICS)["rows"]}
    assert rows["rollout"]["tags"] == [
        {"text": "pointing_game: above centre", "css": "pass"},  # CI low 0.90 > centre's 0.43
        {"text": "deletion: better than a random order", "css": "pass"},
        {"text": "insertion: better than a random order", "css": "pass"}]
    assert rows["gradcam"]["tags"] == [
        {"text": "pointing_game: not above centre", "css": "fail"},  # CI low 0.39 < 0.43
        {"text": "deletion: better than a random order", "css": "pass"},
        {"text": "insertion: no better than a random order", "css": "fail"}]  # CI [-0.03, 0.02] holds 0
    assert rows["centre"]["tags"] == [] and rows["eigencam"]["tags"] == []


def test_lower_is_better_and_gaze_only_data():
    summary = {m: {"kl_div": st(v, v - 0.1, v + 0.1), "nss": st(n, n - 0.2, n + 0.2)}
               for m, v, n in (("a", 1.5, 0.9), ("b", 0.8, 1.4), ("centre", 1.0, 1.0), ("random", 2.0, 0.0))}
    board = leaderboard_context(summary, ["a", "b"], ["kl_div", "nss"])
    assert board["sorted_by"] == "nss" and [r["method"] for r in board["rows"]] == ["b", "centre", "a", "random"]
    assert board["rows"][0]["tags"] == [{"text": "nss: above centre", "css": "pass"}]
    assert [c["arrow"] for c in board["columns"]] == ["↑"]


def test_one_method_has_no_leaderboard():
    assert leaderboard_context(SUMMARY, ["gradcam"], METRICS) is None
    assert leaderboard_context({k: SUMMARY[k] for k in ("gradcam", "centre")}, ["gradcam", "rollout"], METRICS) is None


class _Table(HTMLParser):
    """The rows of the table inside ``<h2 id="leaderboard">``'s section, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.on, self.rows, self.cell = False, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self.on = dict(attrs).get("id") == "leaderboard"
        elif self.on and tag == "tr":
            self.rows.append({"class": dict(attrs).get("class") or "", "cells": []})
        elif self.on and tag in ("td", "th") and self.rows:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1]["cells"].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.on = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data + " ")


def test_the_report_shows_the_leaderboard_with_two_methods(tmp_path):
    results = make_audit(tmp_path, n=8)  # gradcam hits every box; rollout is noise
    html = render_report(results).read_text(encoding="utf-8")
    assert '<a href="#leaderboard">Leaderboard</a>' in html
    table = _Table()
    table.feed(html)
    head, *body = table.rows
    assert head["cells"][:3] == ["#", "Method", "pointing_game ↑"]
    names = [r["cells"][1] for r in body]
    assert names[0] == "gradcam" and {"centre (baseline)", "random (baseline)", "rollout"} == set(names[1:])
    pg = json.loads(results.read_text())["summary"]["gradcam"]["pointing_game"]
    assert body[0]["cells"][0] == "1" and body[0]["cells"][2] == f"{pg['mean']:.3f} [{pg['ci_low']:.3f}, {pg['ci_high']:.3f}]"
    assert "pointing_game: above centre" in body[0]["cells"][-1]
    for r in body:
        assert ("baseline" in r["class"]) == r["cells"][1].endswith("(baseline)")


def test_the_report_of_one_method_has_no_leaderboard(tmp_path):
    results = make_audit(tmp_path, n=4, methods=("gradcam",))
    html = render_report(results).read_text(encoding="utf-8")
    assert 'id="leaderboard"' not in html and "#leaderboard" not in html
