"""Scale: an audit of 1,000 / 10,000 (/ 50,000) images and its report -- time, output size, peak memory.

Each size runs in its own subprocess (``python -m benchmarks.scale --child N WORK``): synthetic
64 px images (:func:`auditor.datasets.synthetic.write_dataset`), ``demo:clean``, Grad-CAM +
rollout, ``run_audit`` without the report, then ``render_report`` (default gallery) timed on its
own. The child prints one JSON line: audit and report seconds, peak RSS (``VmHWM``) of the whole
process, and the sizes of ``report.html``, ``results.json``, ``rows.jsonl``, ``results.csv``,
``token_maps.npz``, the rest, and the output folder. Writing the data set is not timed. Then, in a
second process (``--compare-child``), ``compare_results`` of the audit against itself (every
paired image's map agreement, the deltas, comparison.json and its report): seconds and peak RSS.

Targets (issue 19): ``report.html`` <= 10 MB and the output folder <= 100 MB at every size; at the
largest, report time <= 10% of the audit's (the report's fixed cost -- plots, 60 cards -- weighs
more at 1,000) and peak RSS within 100 MB of the smallest size's. Sizes run
one after another, so on a shared machine the ratio (report / audit, same process) is the
figure to trust; absolute seconds move with the load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ._harness import Config, Row

FAMILY = "scale"
METHODS = ("gradcam", "rollout")
BATCH = 64


def run(cfg: Config, work: Path | None = None) -> list[Row]:
    import tempfile

    sizes = cfg.scale_sizes
    with tempfile.TemporaryDirectory(prefix="auditor-scale-") as tmp:
        work = Path(work or tmp)
        got = {n: measure(n, work / f"n{n}") for n in sizes}
    return rows(got)


def measure(n: int, work: Path) -> dict:
    """One size in its own process (its peak RSS is its own), then its compare in another."""
    got = {}
    for mode in ("--child", "--compare-child"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.scale", mode, str(n), str(work)],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        got.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return got


def rows(got: dict[int, dict]) -> list[Row]:
    sizes = sorted(got)
    first, last = got[sizes[0]], got[sizes[-1]]
    out = []
    for n in sizes:
        g, mb = got[n], lambda b: f"{b / 2**20:.1f} MB"
        top = n == sizes[-1] and n > sizes[0]
        share = g["report_s"] / g["audit_s"]
        out += [
            Row(FAMILY, f"{n} images: audit (run_audit, {'+'.join(METHODS)}, demo:clean, 64 px)",
                f"{g['audit_s']:.1f} s ({n / g['audit_s']:.0f} images/s)"),
            Row(FAMILY, f"{n} images: report (render_report, default gallery)", f"{g['report_s']:.1f} s", share,
                "audit time", f"<= 0.10x at {sizes[-1]}" if top else "", (share <= 0.10) if top else None),
            Row(FAMILY, f"{n} images: report.html", mb(g["bytes"]["report.html"]), None, "",
                "<= 10 MB", g["bytes"]["report.html"] <= 10 * 2**20),
            Row(FAMILY, f"{n} images: output folder (" + ", ".join(f"{k} {mb(v)}" for k, v in g["bytes"].items()
                                                                  if k not in ("report.html", "total")) + ")",
                mb(g["bytes"]["total"]), None, "", "<= 100 MB", g["bytes"]["total"] <= 100 * 2**20),
            Row(FAMILY, f"{n} images: peak RSS (audit + report, one process)", f"{g['vmhwm_mb']:.0f} MB", None,
                f"+{g['vmhwm_mb'] - first['vmhwm_mb']:.0f} MB over {sizes[0]}" if n != sizes[0] else "",
                f"+ <= 100 MB at {sizes[-1]}" if top else "",
                (last["vmhwm_mb"] - first["vmhwm_mb"] <= 100) if top else None),
        ]
        if "compare_s" in g:
            out.append(Row(FAMILY, f"{n} images: compare (compare_results, the audit against itself, with report)",
                           f"{g['compare_s']:.1f} s, peak RSS {g['compare_vmhwm_mb']:.0f} MB, comparison.json "
                           f"{mb(g['comparison_bytes'])}", g["compare_s"] / g["audit_s"], "audit time"))
    return out


def _child(n: int, work: Path) -> None:
    from auditor.datasets.synthetic import SyntheticConfig, write_dataset
    from auditor.report import render_report
    from auditor.runner import run_audit

    from .audit import _vmhwm_mb

    manifest = write_dataset(work / "data", n, cfg=SyntheticConfig(size=64), gaze_maps=False)
    start = time.perf_counter()
    result = run_audit(manifest, out=work / "out", checkpoint="demo:clean", methods=list(METHODS), batch_size=BATCH,
                       overwrite=True, report=False, engine="local")  # one process: its VmHWM is the peak
    audit_s = time.perf_counter() - start
    start = time.perf_counter()
    render_report(result.out / "results.json")
    report_s = time.perf_counter() - start
    sizes = {p.name: p.stat().st_size for p in (work / "out").iterdir() if p.is_file()}
    named = {k: sizes.pop(k, 0) for k in ("report.html", "results.json", "rows.jsonl", "results.csv", "token_maps.npz")}
    rest = sum(sizes.values()) + sum(f.stat().st_size for d in (work / "out").iterdir() if d.is_dir()
                                     for f in d.rglob("*") if f.is_file())
    total = sum(named.values()) + rest
    print(json.dumps({"n": n, "audit_s": audit_s, "report_s": report_s, "vmhwm_mb": _vmhwm_mb(),
                      "bytes": {**named, "other": rest, "total": total}}))


def _compare_child(work: Path) -> None:
    from auditor.compare import compare_results

    from .audit import _vmhwm_mb

    results = work / "out" / "results.json"
    start = time.perf_counter()
    compare_results(results, results, out=work / "compare")
    seconds = time.perf_counter() - start
    print(json.dumps({"compare_s": seconds, "compare_vmhwm_mb": _vmhwm_mb(),
                      "comparison_bytes": (work / "compare" / "comparison.json").stat().st_size}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--compare-child":
        _compare_child(Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m benchmarks.scale --child|--compare-child N WORK (run the suite with "
                 "python -m benchmarks)")
