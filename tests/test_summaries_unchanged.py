"""The end of a run made cheaper without changing a byte: every CI, summary, CSV line and index
line equals the one computed the way it was before (commit f29b553).

``_old_*`` are that commit's code, copied here verbatim apart from argument checks:
``bootstrap_ci`` (one draw of resample indices per call), ``summarise`` / ``summarise_per_class``
(``scoring.py``), ``summarise_layers`` (``layers.py``), the gate's error list (``runner._gate``),
``write_csv`` (two passes) and ``write_index`` (a full parse per row). Values are compared
exactly (``==``, not approx).
"""

from __future__ import annotations

import csv
import json
import math
from array import array

import numpy as np
import pytest

from auditor.metrics import BINARY_METRICS, bootstrap, wilson_ci
from auditor.metrics.bootstrap import Summary, bootstrap_ci, bootstrap_cis
from auditor.metrics.stats import is_binary
from auditor.results import RowsFile, clean, row_json, write_csv, write_index


def _old_chunks(total, n, chunk=1 << 20):
    step = max(1, chunk // max(n, 1))
    for start in range(0, total, step):
        yield min(step, total - start)


def _old_bootstrap_ci(values, *, n_boot=2000, confidence=0.95, seed=0):
    x = np.asarray(values).astype(np.float64)
    finite = x[np.isfinite(x)]
    n, n_nan = int(finite.size), int(x.size - finite.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, n_nan)
    mean = float(finite.mean())
    if n == 1:
        return Summary(mean, mean, mean, 1, n_nan)
    rng = np.random.default_rng(seed)
    means = np.concatenate([finite[rng.integers(0, n, size=(rows, n))].mean(axis=1) for rows in _old_chunks(n_boot, n)])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Summary(mean, float(lo), float(hi), n, n_nan)


def _same(a: Summary, b: Summary) -> bool:
    """Equal field by field, NaN equal to NaN."""
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(vars(a).values(), vars(b).values()))


def _columns(n: int, rng: np.random.Generator, kinds: int = 5) -> list[np.ndarray]:
    """Columns with ``n`` finite values each: NaN / inf padded, uniform, heavy-tailed, ties, binary."""
    padded = np.concatenate([rng.random(n), [np.nan, np.inf, -np.inf]])
    rng.shuffle(padded)
    more = [rng.random(n), rng.standard_cauchy(n), np.round(rng.random(n) * 4) / 4, (rng.random(n) < 0.3) * 1.0]
    return ([padded] + more)[:kinds]


def _check(columns: list[np.ndarray], seed: int) -> None:
    got = bootstrap_cis(columns, seed=seed)  # mixed lengths, in one call
    want = [_old_bootstrap_ci(c, seed=seed) for c in columns]
    bad = [(c.size, g, w) for c, g, w in zip(columns, got, want) if not _same(g, w)]
    assert not bad, bad[:3]


@pytest.mark.parametrize("seed", [0, 7])
def test_every_ci_is_the_old_ci_bit_for_bit(seed):
    # n = 2..140 (numpy's pairwise summation switches at 8 and 128 values), and where the draws
    # are cut into blocks (n > 524: 2**20 // n rows a block) up to 5,000
    rng = np.random.default_rng(seed)
    _check([c for n in range(2, 141) for c in _columns(n, rng)], seed)
    _check([c for n in (255, 256, 257, 523, 524, 525, 1000, 1024, 2047, 5000) for c in _columns(n, rng, 2)], seed)


@pytest.mark.slow
def test_every_ci_is_the_old_ci_bit_for_bit_up_to_5000():
    rng = np.random.default_rng(1)
    _check([c for n in range(141, 5001, 29) for c in _columns(n, rng, 2)], seed=0)


def test_gather_blocks_change_no_value(monkeypatch):
    # gather slices of 1, 3 and 7 rows: chunk and slice ends fall everywhere; still the old values
    x = [np.random.default_rng(3).random(n) for n in (2, 3, 17, 600, 600)]
    want = [_old_bootstrap_ci(c, seed=1) for c in x]
    for elements in (1, 3 * 600, 7 * 17):
        monkeypatch.setattr(bootstrap, "_GATHER_ELEMENTS", elements)
        assert bootstrap_cis(x, seed=1) == want


def test_other_settings_and_edge_columns():
    x = [np.random.default_rng(4).random(50), np.random.default_rng(5).random(50)]
    for kw in ({"n_boot": 1}, {"n_boot": 333, "confidence": 0.5}, {"n_boot": 4001, "confidence": 0.99, "seed": 3}):
        assert bootstrap_cis(x, **kw) == [_old_bootstrap_ci(c, **kw) for c in x]
    edge = [[], [np.nan, np.nan], [np.inf, 0.25], [0.7] * 5, np.array([True, False, True]), [1, 2, 3]]
    got = bootstrap_cis(edge)
    assert all(_same(g, _old_bootstrap_ci(c)) for g, c in zip(got, edge))
    assert [(g.n, g.n_nan) for g in got] == [(0, 0), (0, 2), (1, 1), (5, 0), (3, 0), (3, 0)]
    assert bootstrap_cis([]) == []


def test_bootstrap_ci_is_one_column_of_bootstrap_cis():
    x = np.random.default_rng(6).random(40)
    assert bootstrap_ci(x, seed=2) == bootstrap_cis([x], seed=2)[0] == _old_bootstrap_ci(x, seed=2)


def test_columns_are_checked_like_bootstrap_ci():
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_cis([[1.0, 2.0], [[1.0]]])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_cis([[1.0, 2.0]], confidence=1.0)


# ---------------------------------------------------------------- summaries, CSV, index: the old way


def _old_add_values(values, row):
    for method, mets in (row.get("metrics") or {}).items():
        for metric, v in mets.items():
            values.setdefault(method, {}).setdefault(metric, array("d")).append(np.nan if v is None else float(v))


def _old_summary_stat(metric, values, seed):
    if metric in BINARY_METRICS and is_binary(values):
        return {**wilson_ci(values).to_dict(), "interval": "wilson"}
    return {**_old_bootstrap_ci(values, seed=seed).to_dict(), "interval": "bootstrap"}


def _old_summaries(values, seed):
    return {m: {k: _old_summary_stat(k, np.asarray(v, dtype=float), seed) for k, v in sorted(mets.items())}
            for m, mets in values.items()}


def _old_summarise(rows, *, seed=0):
    values = {}
    for row in rows:
        _old_add_values(values, row)
    return _old_summaries(values, seed)


def _old_summarise_per_class(rows, seed):
    groups = {}
    for r in rows:
        if r.get("label_name") is not None and not r.get("error"):
            _old_add_values(groups.setdefault(str(r["label_name"]), {}), r)
    return {cls: _old_summaries(values, seed) for cls, values in sorted(groups.items())}


def _old_summarise_layers(rows, *, seed=0):
    values = {}
    for row in rows:
        for method, mets in (row.get("per_layer") or {}).items():
            for metric, per_layer in mets.items():
                cols = values.setdefault(method, {}).setdefault(metric, [[] for _ in per_layer])
                for col, v in zip(cols, per_layer):
                    col.append(np.nan if v is None else float(v))
    out = {}
    for m, mets in values.items():
        for k, cols in mets.items():
            if any(np.isfinite(c).any() for c in cols):
                out.setdefault(m, {})[k] = [_old_bootstrap_ci(np.asarray(c), seed=seed).to_dict() for c in cols]
    return out


def _old_errors(rows):
    return [r["error"] if str(r["error"]).startswith(str(r["id"])) else f"{r['id']}: {r['error']}"
            for r in rows if r["error"]]


def _old_write_csv(path, rows):
    metric_cols = sorted({f"{m}.{k}" for r in rows for m, mets in (r.get("metrics") or {}).items() for k in mets})
    cols = ["id", "image", "label", "target", "prediction", "error", *metric_cols]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            flat = {f"{m}.{k}": v for m, mets in (r.get("metrics") or {}).items() for k, v in mets.items()}
            w.writerow(["" if (v := (r.get(c) if c in r else flat.get(c))) is None else v for c in cols])


def _old_index(rows_path):
    lines, offset = [], 0
    with open(rows_path, "rb") as f:
        for line in f:
            if line.strip():
                lines.append(f"{offset}\t{json.loads(line).get('id')}\n")
            offset += len(line)
    return "".join(lines)


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Rows as the runner writes them: 3 classes (and unlabelled rows), error rows, NaN metrics,
    a binary pointing game (Wilson) and one that is not (a 0.5 tie: bootstrap), per-layer values."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        if i % 17 == 3:
            rows.append({"id": f"e{i}", "label_name": None, "metrics": {}, "map_status": {}, "error": "unreadable"})
            continue
        mets = {}
        for method in ("gradcam", "rollout", "centre"):
            m = {"pointing_game": float(rng.random() < 0.6), "relevance_mass": float(rng.random()),
                 "nss": float(rng.normal()), "kl_div": None if rng.random() < 0.1 else float(rng.random() * 3)}
            if method == "rollout" and i % 5 == 0:
                m["pointing_game"] = 0.5
            if method == "gradcam" and i % 11 == 0:
                m = dict.fromkeys(m)  # a constant map: every metric undefined
            mets[method] = m
        layers = {"cls_attention": {"pointing_game": [float(rng.random() < 0.5) for _ in range(4)],
                                    "relevance_mass": [None if rng.random() < 0.05 else float(rng.random())
                                                       for _ in range(4)]}}
        rows.append({"id": f"img{i}", "image": f"/data/img{i}.png", "label": i % 4,
                     "label_name": ["cat", "dog", "owl", None][i % 4], "target": i % 4, "prediction": (i * 7) % 4,
                     "metrics": mets, "map_status": {}, "error": None, "per_layer": layers})
    return rows


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(row_json(r) + "\n" for r in _rows(150)))
    return RowsFile(path)


def test_one_pass_gives_the_old_summaries_errors_and_columns(rows_file, tmp_path):
    from auditor.layers import layer_summaries
    from auditor.runner import _scan
    from auditor.scoring import summary_tables

    scan = _scan(rows_file, values=True)
    classes = sorted(scan.classes)
    summary, *tables = summary_tables([scan.values, *(scan.classes[c] for c in classes)], 3)
    assert summary == _old_summarise((r for r in rows_file if not r["error"]), seed=3)
    assert dict(zip(classes, tables)) == _old_summarise_per_class(rows_file, 3)
    assert classes == ["cat", "dog", "owl"]
    assert layer_summaries(scan.layers, seed=3) == _old_summarise_layers((r for r in rows_file if not r["error"]), seed=3)
    assert {s["interval"] for s in summary["rollout"].values()} == {"bootstrap"}  # its 0.5 ties are not binary
    assert summary["gradcam"]["pointing_game"]["interval"] == "wilson"
    assert scan.errors == _old_errors(rows_file) and len(scan.errors) == 9
    assert scan.n_rows == 150 and len(rows_file) == 150
    write_csv(tmp_path / "new.csv", rows_file, metric_columns=scan.columns)
    _old_write_csv(tmp_path / "old.csv", rows_file)
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
    write_csv(tmp_path / "two_pass.csv", rows_file)  # without the columns: the old two passes
    assert (tmp_path / "two_pass.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()


def test_index_reads_ids_as_a_full_parse_does(tmp_path):
    rows = [{"id": "plain"}, {"id": "tab\there \"quoted\" \\ ü 🦉"}, {"id": 7}, {"id": None},
            {"image": "x.png", "id": "not first"}, {"id": "spaced"}]
    lines = [row_json(r) for r in rows[:5]] + ['{"id": "spaced", "metrics": {}}', ""]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert write_index(path, tmp_path / "index.tsv") == 6
    assert (tmp_path / "index.tsv").read_text(encoding="utf-8") == _old_index(path)


def test_rows_file_counts_rows_on_a_whole_pass_only(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id":"a"}\n\n{"id":"b"}\n{"id":"c"}\n')
    rows = RowsFile(path)
    next(iter(rows))
    assert rows._len is None  # a pass left early counts nothing
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows._len == 3 == len(rows)


def test_a_run_writes_what_the_old_way_computes_from_its_rows(tmp_path):
    from auditor.gate import errors_verdict
    from auditor.runner import run_audit
    from conftest import tiny_vit
    from test_run import write_square_set

    manifest = write_square_set(tmp_path / "data", n=30, extra_lines=[json.dumps({"image": "gone.png", "label": "red"})])
    lines = manifest.read_text().splitlines()
    for i in range(1, 31):  # three classes, so that per_class has several tables
        entry = json.loads(lines[i])
        lines[i] = json.dumps({**entry, "label": ["red", "green", "blue"][i % 3]})
    manifest.write_text("\n".join(lines) + "\n")
    model = tiny_vit(num_classes=3, class_names=["red", "green", "blue"])
    res = run_audit(manifest, out=tmp_path / "o", model=model, methods=["gradcam", "cls_attention"], seed=5,
                    image_size=32, fail_under=["gradcam.relevance_mass=0.01"], max_errors=1)
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    rows = RowsFile(tmp_path / "o" / "rows.jsonl")
    ok = [r for r in rows if not r["error"]]
    assert data["summary"] == clean(_old_summarise(ok, seed=5))
    assert data["per_class"] == clean(_old_summarise_per_class(rows, 5)) and len(data["per_class"]) == 3
    assert data["per_layer"] == clean(_old_summarise_layers(ok, seed=5)) and data["per_layer"]["cls_attention"]
    assert data["counts"] == {"images": 31, "ok": 30, "errors": 1} and res.passed
    assert data["verdicts"][-1] == clean(errors_verdict(_old_errors(rows), 1).to_dict())
    _old_write_csv(tmp_path / "old.csv", rows)
    assert (tmp_path / "o" / "results.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()


def _old_cluster_bootstrap_ci(values, *factors, weights=None, n_boot=2000, confidence=0.95, seed=0):
    x = np.asarray(values).astype(np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights).astype(np.float64)
    codes = [np.asarray(f, dtype=object) for f in factors]
    keep = np.isfinite(x)
    x, w, n_nan = x[keep], w[keep], int(x.size - keep.sum())
    codes = [np.unique(f[keep].astype(str), return_inverse=True)[1].ravel() for f in codes]
    n = int(x.size)
    if n == 0 or w.sum() == 0:
        return Summary(math.nan, math.nan, math.nan, n, n_nan)
    mean = float((w * x).sum() / w.sum())
    sizes = [int(c.max()) + 1 for c in codes]
    if n == 1 or all(g == 1 for g in sizes):
        return Summary(mean, mean, mean, n, n_nan)
    rng = np.random.default_rng(seed)
    stats = []
    for rows in _old_chunks(n_boot, max(sizes) if len(codes) == 1 else n):
        if len(codes) == 1:
            idx = rng.integers(0, sizes[0], size=(rows, sizes[0]))
            top = np.bincount(codes[0], weights=w * x, minlength=sizes[0])[idx].sum(axis=1)
            bottom = np.bincount(codes[0], weights=w, minlength=sizes[0])[idx].sum(axis=1)
        else:
            m = np.ones((rows, n))
            for c, g in zip(codes, sizes):
                counts = np.zeros((rows, g))
                np.add.at(counts, (np.arange(rows)[:, None], rng.integers(0, g, size=(rows, g))), 1.0)
                m *= counts[:, c]
            top, bottom = m @ (w * x), m @ w
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan))
    means = np.concatenate(stats)
    means = means[np.isfinite(means)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Summary(mean, float(lo), float(hi), n, n_nan)


@pytest.mark.parametrize("episodes, queries", [(1, 5), (3, 4), (12, 15), (40, 75)])
def test_crossed_cluster_bootstrap_is_the_old_one_bit_for_bit(episodes, queries):
    # counts of drawn clusters from np.bincount instead of np.add.at: the same whole numbers
    from auditor.metrics.bootstrap import cluster_bootstrap_ci

    rng = np.random.default_rng(episodes)
    n = episodes * queries
    x = np.where(rng.random(n) < 0.1, np.nan, rng.random(n))
    ep, img = np.repeat(np.arange(episodes), queries), rng.integers(0, max(2, n // 3), n)
    w = 1.0 / queries * np.ones(n)
    for kw in ({}, {"weights": w, "seed": 4}, {"n_boot": 501, "confidence": 0.8}):
        assert _same(cluster_bootstrap_ci(x, ep, img, **kw), _old_cluster_bootstrap_ci(x, ep, img, **kw))
        assert _same(cluster_bootstrap_ci(x, ep, **kw), _old_cluster_bootstrap_ci(x, ep, **kw))


def test_cluster_cis_of_many_columns_are_the_old_ones_bit_for_bit():
    from auditor.metrics.bootstrap import cluster_bootstrap_cis

    rng = np.random.default_rng(9)
    ep, img = np.repeat(np.arange(10), 12), rng.integers(0, 40, 120)
    base = rng.random(120)
    nan_rows = np.where(rng.random(120) < 0.2, np.nan, 0.0)
    columns = [base, rng.random(120), base + nan_rows, rng.random(120) + nan_rows, np.full(120, np.nan),
               np.where(np.arange(120) == 7, 0.3, np.nan), (rng.random(120) < 0.5) * 1.0]
    w = rng.random(120)
    for factors in ((ep, img), (ep,), (img,)):
        for kw in ({}, {"weights": w, "seed": 2, "n_boot": 777}):
            got = cluster_bootstrap_cis(columns, *factors, **kw)
            assert all(_same(g, _old_cluster_bootstrap_ci(c, *factors, **kw)) for g, c in zip(got, columns))
    with pytest.raises(ValueError, match="one value per row"):
        cluster_bootstrap_cis([base, base[:5]], ep)


def _old_episode_summaries(rows, *, seed=0, by=None, layers=False):
    groups = {}
    for r in rows:
        if r.get("error") or (by and r.get(by) is None):
            continue
        g = groups.setdefault(str(r[by]) if by else "", {})
        for method, mets in (r.get("per_layer" if layers else "metrics") or {}).items():
            for metric, v in mets.items():
                vs = v if layers else [v]
                cols = g.setdefault(method, {}).setdefault(metric, [[] for _ in vs])
                for col, x in zip(cols, vs):
                    col.append((np.nan if x is None else float(x), r["episode"], str(r.get("record_id"))))

    def ci(col):
        values, episodes, images = zip(*col)
        return _old_cluster_bootstrap_ci(values, episodes, images, seed=seed).to_dict()

    out = {name: {m: {k: [ci(c) for c in cols] if layers else ci(cols[0]) for k, cols in sorted(mets.items())
                      if not layers or any(np.isfinite([v for v, _, _ in c]).any() for c in cols)}
                  for m, mets in g.items()} for name, g in sorted(groups.items())}
    if layers:
        out = {name: {m: mets for m, mets in g.items() if mets} for name, g in out.items()}
    return out if by else out.get("", {})


def test_episode_summaries_are_the_old_ones_bit_for_bit():
    from auditor.episodes import episode_summaries

    rows = []
    for i, r in enumerate(_rows(120, seed=4)):
        rows.append({**r, "episode": i // 15, "record_id": f"rec{(i * 7) % 50}"})
    rows[20]["per_layer"] = {"cls_attention": {"pointing_game": [None] * 4, "relevance_mass": [None] * 4}}
    for kw in ({}, {"by": "label_name"}, {"layers": True}):
        assert episode_summaries(rows, seed=6, **kw) == _old_episode_summaries(rows, seed=6, **kw)
