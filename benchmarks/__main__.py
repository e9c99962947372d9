"""``python -m benchmarks [--quick | --full] [--only FAMILY ...] [--out PATH]``: run the suite, print and
write the markdown table (default ``benchmarks/results.md``)."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from . import audit, methods, overlay, passes, scale, score_size
from ._harness import Config, table

FAMILIES = {"passes": passes.run, "methods": methods.run, "overlay": overlay.run, "audit": audit.run, "scale": scale.run,
            "score_size": score_size.run}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="~1 minute smoke run (2-block ViT, 1 repeat, few images)")
    mode.add_argument("--full", action="store_true", help="also peak RSS at 10,000 images and the 50,000-image scale run")
    ap.add_argument("--only", nargs="+", choices=sorted(FAMILIES), help="run only these families")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the model passes and the audit run there)")
    args = ap.parse_args(argv)
    from auditor.models import resolve_device

    dev = resolve_device(args.device)
    cfg = Config.make(quick=args.quick, full=args.full, device=str(dev))
    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    print(f"device: {device}", file=sys.stderr)
    started = time.perf_counter()
    rows = []
    for name, fn in FAMILIES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        rows += fn(cfg)
        print(f"[{name}] {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    mode_name = "quick (smoke: 2-block ViT, not comparable)" if cfg.quick else ("full" if cfg.full else "default")
    header = (f"# Benchmark results\n\nMode: {mode_name}; device {device}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, "
              f"{platform.machine()}, Python {platform.python_version()}; {time.perf_counter() - started:.0f} s in all. "
              "Ratios are medians of same-round ratios; times are medians.\n")
    text = header + "\n" + table(rows) + "\n"
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
