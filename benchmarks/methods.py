"""Marginal cost of each explanation method, as ratios of model-pass floors (ViT-S/16 at 224).

One-pass methods (the CAM family, ``input_gradient``): ``compute_maps(model, x, [method])`` at
the largest batch (16) against the forward + backward floor of ``passes.py`` (one forward and
one ``autograd.grad`` to the Grad-CAM layer); all CAM variants together: target <= 1.1x.

Chefer's ``generic_attention`` / ``transformer_attribution`` (shared pass): against the same floor
and against a forward + backward to the input, which their backward must reach (no target).

Methods with their own passes: their marginal cost -- ``compute_maps(model, x, [method])`` minus
the bare forward every audit runs anyway, same round -- against their own floor: exactly the
passes their ``cost`` states (e.g. integrated gradients: ``n_steps`` forwards + ``autograd.grad``
to the input per image and 2 forwards per image; Score-CAM: ``C`` forwards per image), run
bare on the same number of images in chunks of the same size: target <= 1.1x. The ratio says
what our bookkeeping (building perturbed images, accumulating) adds to the passes. These run on
a 2-block ViT-S (Score-CAM / Ablation-CAM at batch 1: 384 channels x 16 images would be 6,144
forwards per call) so that the default suite stays within minutes (``--quick``: 48 channels); the value column also
gives each one's time per image as a multiple of that model's forward + backward floor.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from auditor.methods import compute_maps, create_method
from auditor.models import create_model

from ._harness import Config, Row, interleaved, median, ms, ratio
from .passes import build_model, forward_floor, gradcam_floor

FAMILY = "method cost"
GRADIENT_CAMS = ["gradcam", "hirescam", "gradcam_plusplus", "xgradcam", "layercam"]
ONE_PASS = GRADIENT_CAMS + ["eigencam", "eigengradcam"]


def bare_passes(model: torch.nn.Module, x: torch.Tensor, count: int, chunk: int, *, backward: bool) -> Callable[[], None]:
    """``count`` images (copies of ``x``'s) through the model in chunks of ``chunk``; with
    ``backward``, one ``autograd.grad`` of the max logit to the input per chunk."""
    def run():
        for lo in range(0, count, chunk):
            n = min(chunk, count - lo)
            batch = x[torch.arange(lo, lo + n) % x.shape[0]]
            if backward:
                batch = batch.requires_grad_(True)
                torch.autograd.grad(model(batch).amax(-1).sum(), batch)
            else:
                with torch.no_grad():
                    model(batch)
    return run


def own_pass_cases(cfg: Config) -> list[tuple[str, dict, int, Callable[[torch.nn.Module, torch.Tensor], list]]]:
    """(method, options, batch, floor passes) for each method with its own passes."""
    quick = cfg.quick
    steps = 2 if quick else 8
    win = 112 if quick else 56  # 224 / 56 = 4 positions per axis: 16 windows
    windows = (224 // win) ** 2
    return [
        ("integrated_gradients", {"n_steps": steps}, 16,
         lambda m, x: [bare_passes(m, x, steps * x.shape[0], 32, backward=True),
                       bare_passes(m, x, 2 * x.shape[0], x.shape[0], backward=False)]),
        ("smoothgrad", {"n_samples": steps}, 16,
         lambda m, x: [bare_passes(m, x, steps * x.shape[0], 32, backward=True)]),
        ("occlusion", {"window": win, "stride": win}, 16,
         lambda m, x: [bare_passes(m, x, x.shape[0], x.shape[0], backward=False),
                       bare_passes(m, x, windows * x.shape[0], 32, backward=False)]),
        ("rise", {"n_masks": 4 * steps}, 16,
         lambda m, x: [bare_passes(m, x, 4 * steps * x.shape[0], 32, backward=False)]),
        ("attnlrp", {}, 16, lambda m, x: [bare_passes(m, x, x.shape[0], 32, backward=True)]),
        ("legrad", {}, 16, lambda m, x: [bare_passes(m, x, x.shape[0], 32, backward=True)]),
        ("scorecam", {}, 1, lambda m, x: [bare_passes(m, x, m.embed_dim * x.shape[0], 32, backward=False)]),
        ("ablationcam", {}, 1, lambda m, x: [bare_passes(m, x, m.embed_dim * x.shape[0], 32, backward=False)]),
    ]


def run(cfg: Config) -> list[Row]:
    b = max(cfg.batch_sizes)
    x = torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b)).to(cfg.device)
    return one_pass_rows(cfg, x) + transformer_rows(cfg, x) + own_pass_rows(cfg, x)


def transformer_rows(cfg: Config, x: torch.Tensor) -> list[Row]:
    """Chefer's methods in the shared pass, against the Grad-CAM floor (whose backward stops at the
    last block) and a forward + backward to the input (theirs must reach the first block's
    attention): no target, the 1.1x of the CAM family cannot hold for a longer backward."""
    model = build_model(cfg)
    b = len(x)
    names = ["generic_attention", "transformer_attribution"]
    fns = {"fwd+bwd": gradcam_floor(model, x), "to input": bare_passes(model, x, b, b, backward=True)}
    for name in names:
        fns[name] = (lambda n: lambda: compute_maps(model, x, [create_method(n)]))(name)
    t = interleaved(fns, repeats=cfg.repeats, warmup=cfg.warmup)
    return [Row(FAMILY, f"{name} alone, batch {b}", f"{ms(median(t[name]) / b)}/image = "
                f"{ratio(t, name, 'to input'):.2f}x fwd+bwd to the input", ratio(t, name, "fwd+bwd"), "fwd+bwd floor")
            for name in names]


def one_pass_rows(cfg: Config, x: torch.Tensor) -> list[Row]:
    """Each one-pass method alone and the CAMs together against the fwd+bwd floor (ViT-S/16, batch ``len(x)``)."""
    rows: list[Row] = []
    model = build_model(cfg)
    b = len(x)
    fns = {"fwd+bwd": gradcam_floor(model, x),
           "all CAMs": lambda: compute_maps(model, x, [create_method(n) for n in ONE_PASS]),
           "gradient CAMs": lambda: compute_maps(model, x, [create_method(n) for n in GRADIENT_CAMS])}
    for name in ONE_PASS + ["input_gradient"]:
        fns[name] = (lambda n: lambda: compute_maps(model, x, [create_method(n)]))(name)
    t = interleaved(fns, repeats=cfg.repeats, warmup=cfg.warmup)
    for name in ONE_PASS + ["input_gradient"]:
        rows.append(Row(FAMILY, f"{name} alone, batch {b}", f"{ms(median(t[name]) / b)}/image", ratio(t, name, "fwd+bwd"),
                        "fwd+bwd floor"))
    for key, label in (("gradient CAMs", "the 5 gradient-weighted CAMs together"),
                       ("all CAMs", "all 7 one-pass CAMs together (+ eigencam, eigengradcam: an SVD per image each)")):
        together = ratio(t, key, "fwd+bwd")
        rows.append(Row(FAMILY, f"{label}, batch {b}", f"{ms(median(t[key]) / b)}/image", together, "fwd+bwd floor",
                        "<= 1.1x", together <= 1.1))
    return rows


def own_pass_rows(cfg: Config, x: torch.Tensor) -> list[Row]:
    """Methods with their own passes: marginal cost against their own pass floor (2-block ViT-S)."""
    rows: list[Row] = []
    torch.manual_seed(0)
    width = {"embed_dim": 48, "num_heads": 3} if cfg.quick else {}  # quick: 48 channels for Score-/Ablation-CAM
    small = create_model("vit_small", num_classes=1000, depth=2, **width).eval().to(cfg.device)
    for name, options, batch, floor in own_pass_cases(cfg):
        xs = x[:batch]
        parts = floor(small, xs)
        fns = {"forward": forward_floor(small, xs), "fwd+bwd": gradcam_floor(small, xs),
               "floor": lambda parts=parts: [p() for p in parts],
               name: (lambda n, o, xs: lambda: compute_maps(small, xs, [create_method(n, **o)]))(name, options, xs)}
        t = interleaved(fns, repeats=max(1, cfg.repeats - 2), warmup=cfg.warmup)
        marginal = [m - f for m, f in zip(t[name], t["forward"])]
        r = statistics.median(m / fl for m, fl in zip(marginal, t["floor"]))
        per_floor = statistics.median(m / fb for m, fb in zip(marginal, t["fwd+bwd"]))
        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        rows.append(Row(FAMILY, f"{name}({opts}) marginal, 2-block ViT-S, batch {batch}",
                        f"{ms(statistics.median(marginal) / batch)}/image = {per_floor:.1f}x fwd+bwd", r,
                        "its own pass floor", "<= 1.1x", r <= 1.1))
    return rows
