"""Every method's pointing game and relevance mass on the bundled demo models, beside the
centre and random baselines: ``python -m benchmarks.method_table [--n 100] [--out PATH]``.

The data is ``auditor demo``'s (100 held-out synthetic images, seed ``DEMO_SEED``, the corner
mark = the true class); each model is audited with every registered method at its default
options (``run_audit``, target: the label). Prints a markdown table (mean and 95% bootstrap
CI per cell); README.md's method table is its output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from auditor.datasets.synthetic import SyntheticConfig, write_dataset
from auditor.demo import DEMO_SEED
from auditor.methods import list_methods
from auditor.runner import run_audit

MODELS = ("demo:clean", "demo:shortcut")
METRICS = ("pointing_game", "relevance_mass")


def cell(summary: dict, method: str, metric: str) -> str:
    s = summary.get(method, {}).get(metric)
    if s is None:
        return "n/a"
    return f"{s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.method_table", description=__doc__)
    ap.add_argument("--n", type=int, default=100, help="images (default 100, as `auditor demo`)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_dataset(Path(tmp) / "data", args.n, seed=DEMO_SEED, cfg=SyntheticConfig(shortcut="consistent"))
        summaries = {m: run_audit(manifest, out=Path(tmp) / m.replace(":", "_"), checkpoint=m,
                                  methods=list_methods(), overwrite=True).summary for m in MODELS}
    methods = [m for m in list_methods() if any(m in s for s in summaries.values())] + ["centre", "random"]
    head = ["method"] + [f"{model} {metric}" for model in MODELS for metric in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        cells = [cell(summaries[model], method, metric) for model in MODELS for metric in METRICS]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
