"""Model passes against their floors: ViT-S/16 at 224, random weights.

Floors: one bare forward (no grad), and one forward + ``autograd.grad`` of the target
scores to the Grad-CAM layer (``blocks.<last>.norm1``). Ours: :func:`auditor.methods.compute_maps`
with Grad-CAM (target: fwd+bwd floor), and with every attention read-out (``cls_attention`` +
``rollout``, target: the bare forward). pytorch-grad-cam's ``GradCAM`` is timed too when it
is importable (see README.md: it needs its own venv).
"""

from __future__ import annotations

import torch

from auditor.methods import compute_maps, create_method
from auditor.methods.engine import amp_dtype
from auditor.models.adapters import adapter_for
from auditor.models import create_model

from ._harness import Config, Row, interleaved, median, ms, ratio

FAMILY = "model passes"


def build_model(cfg: Config) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_small", num_classes=1000, depth=cfg.depth).eval().to(cfg.device)


def forward_floor(model: torch.nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            model(x)
    return run


def _gradcam_layer(model: torch.nn.Module) -> str:
    """The layer our Grad-CAM uses by default (the model's adapter chooses it)."""
    return adapter_for(model).gradcam_layer()


def gradcam_floor(model: torch.nn.Module, x: torch.Tensor):
    """One forward and one ``autograd.grad`` from the predicted-class scores to the Grad-CAM layer."""
    layer = dict(model.named_modules())[_gradcam_layer(model)]

    def run():
        captured = {}
        handle = layer.register_forward_hook(lambda m, a, out: captured.__setitem__("act", out))
        try:
            out = model(x)
            scores = out.gather(1, out.argmax(-1, keepdim=True))[:, 0]
            torch.autograd.grad(scores.sum(), [captured["act"]])
        finally:
            handle.remove()
    return run


def pytorch_grad_cam(model: torch.nn.Module, x: torch.Tensor):
    """pytorch-grad-cam's GradCAM on the same layer, or None when it is not installed."""
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        return None
    grid = model.patch_embed.grid_size if hasattr(model.patch_embed, "grid_size") else None
    h, w = grid if grid else (x.shape[-2] // 16, x.shape[-1] // 16)

    def reshape(t):  # tokens B x (1 + h w) x C -> B x C x h x w, as its ViT tutorial does
        return t[:, 1:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    layer = dict(model.named_modules())[_gradcam_layer(model)]
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    return lambda: cam(input_tensor=x, targets=None)


def run(cfg: Config) -> list[Row]:
    model = build_model(cfg)
    gradcam = [create_method("gradcam")]
    attention = [create_method("cls_attention"), create_method("rollout")]
    rows: list[Row] = []
    for b in cfg.batch_sizes:
        x = torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b)).to(cfg.device)
        fns = {"forward": forward_floor(model, x), "fwd+bwd": gradcam_floor(model, x),
               "gradcam": lambda: compute_maps(model, x, gradcam),
               "attention": lambda: compute_maps(model, x, attention)}
        if b == max(cfg.batch_sizes):
            fns["gradcam --amp"] = lambda: compute_maps(model, x, gradcam, amp=True)
        pgc = pytorch_grad_cam(model, x) if b == max(cfg.batch_sizes) else None
        if pgc is not None:
            fns["pytorch-grad-cam"] = pgc
        t = interleaved(fns, repeats=cfg.repeats, warmup=cfg.warmup)
        per = f"batch {b}"
        rows += [
            Row(FAMILY, f"floor: bare forward, {per}", f"{ms(median(t['forward']) / b)}/image"),
            Row(FAMILY, f"floor: forward + backward to Grad-CAM layer, {per}",
                f"{ms(median(t['fwd+bwd']) / b)}/image", ratio(t, "fwd+bwd", "forward"), "bare forward"),
        ]
        big = b >= 16 or b == max(cfg.batch_sizes)
        g = ratio(t, "gradcam", "fwd+bwd")
        rows.append(Row(FAMILY, f"ours: Grad-CAM (compute_maps), {per}", f"{ms(median(t['gradcam']) / b)}/image", g,
                        "fwd+bwd floor", "<= 1.15x at batch 16" if big else "", (g <= 1.15) if big else None))
        if "gradcam --amp" in t:
            dtype = str(amp_dtype(x.device)).replace("torch.", "")
            rows.append(Row(FAMILY, f"ours: Grad-CAM with --amp ({dtype}), {per}",
                            f"{ms(median(t['gradcam --amp']) / b)}/image", ratio(t, "gradcam --amp", "fwd+bwd"),
                            "fwd+bwd floor (float32)"))
        if "pytorch-grad-cam" in t:
            rows.append(Row(FAMILY, f"pytorch-grad-cam GradCAM, {per}", f"{ms(median(t['pytorch-grad-cam']) / b)}/image",
                            ratio(t, "pytorch-grad-cam", "fwd+bwd"), "fwd+bwd floor"))
        a = ratio(t, "attention", "forward")
        rows.append(Row(FAMILY, f"ours: cls_attention + rollout (one forward), {per}",
                        f"{ms(median(t['attention']) / b)}/image", a, "bare forward", "<= 1.2x", a <= 1.2))
    return rows
