"""The whole audit (``run_audit``, as ``auditor run``): throughput against the Grad-CAM floor, and
peak memory as the data set grows.

Throughput: N synthetic 256 px images (:func:`auditor.datasets.synthetic.write_dataset`), ViT-S/16
at 224, batch 16, against one forward + backward to the Grad-CAM layer over the same images
already decoded and batched -- the floor. Rounds interleave the floor and four audits: the
default engine (``auto``: forked workers on a CPU, :mod:`auditor.process_engine`) and the
in-process one, each at full size and at ``--score-size 128``. Peak memory below runs the
in-process engine (one process, so its ``VmHWM`` is the whole peak; a worker holds one batch).

Scoring alone: one batch's :func:`auditor.batches.fill_rows` (post-processing, every metric of every
map and baseline, the per-layer scores), in this thread on one torch thread, as CPU time per image
next to the floor's wall time per image: the share of a core the scoring thread needs.

Memory: each size runs in its own subprocess (``python -m benchmarks.audit --rss-child``) that
reports its peak resident set (``VmHWM``); a small ViT keeps 10,000 images within minutes (the
model's own memory is the same at every size, so it does not change the difference).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from auditor.datasets.synthetic import SyntheticConfig, write_dataset
from auditor.images import load_image
from auditor.process_engine import choose
from auditor.runner import run_audit
from auditor.visualize import input_preprocess

from ._harness import Config, Row, interleaved, median, ratio
from .passes import build_model, gradcam_floor

FAMILY = "full audit"
BATCH = 16
TARGET_METHODS = ("gradcam", "cls_attention", "rollout")
SCORE_SIZE = 128  # half the images' side: scoring at a quarter of the pixels


def _floor_over(model, manifest: Path):
    """fwd+bwd floor over the data set's images, decoded and preprocessed beforehand."""
    lines = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
    pre = input_preprocess(model, None, None, None)
    x = torch.cat([pre(load_image(manifest.parent / r["image"])) for r in lines]).to(next(model.parameters()).device)
    passes = [gradcam_floor(model, x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    return lambda: [p() for p in passes]


def scoring_cpu(model, manifest: Path, score_size: int | None = None) -> float:
    """CPU seconds per image of scoring one batch's maps (best of 3), torch on one thread."""
    from auditor.batches import load_item, start_batch
    from auditor.data import load_dataset
    from auditor.methods import create_method
    from auditor.target import Target

    records = load_dataset(manifest).records[:BATCH]
    items = [load_item(r, input_preprocess(model, None, None, None)) for r in records]
    methods = [create_method(m) for m in TARGET_METHODS]
    target = Target("predicted", "benchmark")
    threads = torch.get_num_threads()
    best = float("inf")
    try:
        for _ in range(3):
            finish = start_batch(items, model, methods, target=target, device=next(model.parameters()).device,
                                 writer=None, score_size=score_size)
            torch.set_num_threads(1)
            start = time.process_time()
            finish()
            best = min(best, (time.process_time() - start) / len(items))
            torch.set_num_threads(threads)
    finally:
        torch.set_num_threads(threads)
    return best


def run(cfg: Config, work: Path | None = None) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
        work = Path(work or tmp)
        return throughput_rows(cfg, work) + rss_rows(cfg, work)


def throughput_rows(cfg: Config, work: Path) -> list[Row]:
    """The audit against the floor (interleaved rounds), scoring's CPU share, the default methods."""
    n = cfg.audit_images
    manifest = write_dataset(work / "data", n, cfg=SyntheticConfig(size=256))
    model = build_model(cfg)

    def audit(methods, name, score_size=None, engine="auto"):
        return lambda: run_audit(manifest, out=work / name, model=model, methods=list(methods),
                                 batch_size=BATCH, overwrite=True, device=cfg.device, score_size=score_size,
                                 target="predicted", engine=engine)  # a random 1000-class head: its prediction

    variants = {"audit": ("", None, "auto"), "capped": (f", --score-size {SCORE_SIZE}", SCORE_SIZE, "auto"),
                "local": (", --engine local", None, "local"),
                "local capped": (f", --engine local --score-size {SCORE_SIZE}", SCORE_SIZE, "local")}
    t = interleaved({"floor": _floor_over(model, manifest),
                     **{k: audit(TARGET_METHODS, k.replace(" ", "_"), size, engine)
                        for k, (_, size, engine) in variants.items()}},
                    repeats=cfg.audit_repeats, warmup=cfg.warmup)
    engine = choose("auto", None, torch.device(cfg.device), -(-n // BATCH))
    rows = [Row(FAMILY, f"floor: Grad-CAM fwd+bwd over {n} images, batch {BATCH}", f"{n / median(t['floor']):.2f} images/s")]
    for key, (flags, _, how) in variants.items():
        r = ratio(t, "floor", key)  # throughput ratio = inverse time ratio
        ran = "" if how != "auto" else f" (engine {engine[0]}{f', {engine[1]} workers' if engine[1] > 1 else ''})"
        rows.append(Row(FAMILY, f"run_audit {'+'.join(TARGET_METHODS)}, {n} images 256 px{flags}{ran}",
                        f"{n / median(t[key]):.2f} images/s", r, "floor throughput", ">= 0.9x", r >= 0.9))
    one = write_dataset(work / "one", BATCH, cfg=SyntheticConfig(size=256))
    start = time.perf_counter()
    run_audit(one, out=work / "one_out", model=model, methods=list(TARGET_METHODS), batch_size=BATCH, overwrite=True,
              device=cfg.device, target="predicted")
    one_s = time.perf_counter() - start
    rows.append(Row(FAMILY, f"run_audit on one batch ({BATCH} images): a run's fixed costs and one pass", f"{one_s:.2f} s",
                    one_s / (median(t["floor"]) * BATCH / n), "the floor's time for those images"))
    per_image = median(t["floor"]) / n
    for size in (None, SCORE_SIZE):
        cpu = scoring_cpu(model, manifest, size)
        rows.append(Row(FAMILY, f"scoring alone (CPU, one thread){'' if size is None else f', --score-size {size}'}",
                        f"{cpu * 1e3:.1f} ms/image", cpu / per_image, "floor's wall time per image"))
    start = time.perf_counter()
    audit((), "all")()  # the default methods: input_gradient adds a backward to the input
    all_s = time.perf_counter() - start
    rows.append(Row(FAMILY, f"run_audit default methods, {n} images", f"{n / all_s:.2f} images/s",
                    median(t["floor"]) / all_s, "floor throughput (one sample)"))
    return rows


def rss_rows(cfg: Config, work: Path) -> list[Row]:
    sizes = sorted(cfg.rss_sizes)
    manifest = write_dataset(work / "rss", sizes[-1], cfg=SyntheticConfig(size=64), gaze_maps=True)
    lines = manifest.read_text().splitlines()
    peaks: dict[int, float] = {}
    for size in sizes:
        sub = work / "rss" / f"manifest_{size}.jsonl"
        sub.write_text("\n".join(lines[:size + 1]) + "\n")
        out = subprocess.run([sys.executable, "-m", "benchmarks.audit", "--rss-child", str(sub), str(work / f"rss_out{size}")],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        peaks[size] = json.loads(out.stdout.strip().splitlines()[-1])["vmhwm_mb"]
    rows = []
    for size in sizes:
        delta = peaks[size] - peaks[sizes[0]]
        last = size == sizes[-1] and size > sizes[0]
        rows.append(Row(FAMILY, f"peak RSS, {size} images (small ViT, 64 px)", f"{peaks[size]:.0f} MB",
                        None, f"+{delta:.0f} MB over {sizes[0]} images" if size != sizes[0] else "",
                        f"+ <= 100 MB at {sizes[-1]}" if last else "", (delta <= 100) if last else None))
    return rows


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_child(manifest: str, out: str) -> None:
    from auditor.models import create_model

    torch.manual_seed(0)
    model = create_model("vit_small", embed_dim=48, depth=2, num_heads=3, image_size=64, patch_size=8, num_classes=4)
    start = time.perf_counter()
    run_audit(manifest, out=out, model=model.eval(), batch_size=BATCH, overwrite=True, target="predicted",
              engine="local")  # one process: its VmHWM is the peak (a worker holds one batch: flat in N)
    print(json.dumps({"vmhwm_mb": _vmhwm_mb(), "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-child":
        _rss_child(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m benchmarks.audit --rss-child MANIFEST OUT (run the suite with python -m benchmarks)")
