"""Generate the outside-reference values that tests/test_vit_variants.py checks.

NOT run by the tests (no ``test_`` prefix). It needs timm, pytorch-grad-cam and the official
DINOv2 code, which are NOT project dependencies; run it once in a throwaway venv, from the
repository root::

    /work/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm grad-cam safetensors numpy
    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2src   # commit b8931f7
    XFORMERS_DISABLED=1 DINOV2_SRC=/tmp/dinov2src /work/refvenv/bin/python tests/data/make_vit_variants_reference.py

Builds five small ViTs with random weights (embed 32, depth 2, 2 heads, LayerNorm weights
random, as in make_reference.py: at the default init a headless model's CLS norm is constant
and Grad-CAM becomes float32 noise) and writes, for each ``NAME``:

* ``tests/data/vit_<NAME>.safetensors`` -- the state_dict (matrices float8_e4m3fn, the rest
  float16; the model runs with exactly those values);
* in ``tests/data/vit_variants_reference.npz``: ``NAME/logits`` (the model's output: logits, or
  the CLS feature of a headless model), ``NAME/cls_attention`` ``[L, B, heads, T]`` (row 0 of
  ``softmax(q k^T * scale)`` per layer, computed by hand from each block's ``attn.qkv`` input),
  ``NAME/rollout`` ``[B, T]`` (CLS row of ``prod_l (0.5 A_l + 0.5 I)`` with the head mean, all
  tokens), ``NAME/gradcam_raw`` (pytorch-grad-cam's raw cam on ``blocks[-1].norm1``, prefix
  tokens dropped by its reshape transform), once at the native size (``native``, inputs stored as uint8
  levels) and once at a 30 x 20 patch grid (``big``, one image, levels from :func:`pattern_levels`), plus ``NAME/prefix``, inputs as uint8 levels and the
  package versions.

Models: ``timm_dinov2`` (timm vit_small_patch14_dinov2 layout, 5 classes), ``timm_dinov2_reg``
(vit_small_patch14_reg4_dinov2: ``reg_token``, ``no_embed_class``; headless), ``official_dinov2``
(official DinoVisionTransformer, ``mask_token``, offset resize; headless), ``official_dinov2_reg``
(``register_tokens``, antialiased resize; headless), ``timm_deit_distilled``
(deit_small_distilled_patch16_224: ``dist_token``, ``head_dist``; 5 classes).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))
sys.path.insert(0, os.environ.get("DINOV2_SRC", "/tmp/dinov2src"))

import timm  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from make_reference import input_levels, levels_to_input, randomise, save_weights, store_dtype  # noqa: E402

SMALL = dict(embed_dim=32, depth=2, num_heads=2)
TARGETS = [1, 3]
BIG_GRID = (30, 20)
TOKENS = ("cls_token", "dist_token", "reg_token", "register_tokens", "mask_token")


@torch.no_grad()
def randomise_all(model: nn.Module, seed: int) -> None:
    """make_reference.randomise, then prefix tokens ~ N(0, 0.5) and LayerScale gammas in
    [0.5, 1.5] (visible, not 1e-5), rounded to their storage dtype."""
    randomise(model, seed)
    g = torch.Generator().manual_seed(seed + 100)
    for name, p in model.named_parameters():
        if name in TOKENS:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        elif name.endswith("gamma"):
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
        p.copy_(p.to(store_dtype(name, p)).float())


def official(reg: bool) -> nn.Module:
    from dinov2.models.vision_transformer import DinoVisionTransformer

    return DinoVisionTransformer(img_size=56, patch_size=14, init_values=1e-5, block_chunks=0, mlp_ratio=4,
                                 num_register_tokens=4 if reg else 0, interpolate_antialias=reg,
                                 interpolate_offset=0.0 if reg else 0.1, **SMALL)


def build(name: str) -> tuple[nn.Module, int, tuple[int, int]]:
    """model, patch size, native input size."""
    if name == "timm_dinov2":
        return timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=5, img_size=(56, 84),
                                 dynamic_img_size=True, **SMALL), 14, (56, 84)
    if name == "timm_dinov2_reg":
        return timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, img_size=56,
                                 dynamic_img_size=True, **SMALL), 14, (56, 56)
    if name == "official_dinov2":
        return official(False), 14, (56, 56)
    if name == "official_dinov2_reg":
        return official(True), 14, (56, 56)
    if name == "timm_deit_distilled":
        return timm.create_model("deit_small_distilled_patch16_224", pretrained=False, num_classes=5,
                                 img_size=(64, 96), dynamic_img_size=True, **SMALL), 16, (64, 96)
    raise ValueError(name)


def pattern_levels(shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic uint8 levels 0..15 for the big inputs (a hash of the index: not stored,
    tests/test_vit_variants.py rebuilds them the same way)."""
    idx = np.indices(shape, dtype=np.uint64)
    h = idx[-1] * np.uint64(2654435761) + idx[-2] * np.uint64(40503) + idx[-3] * np.uint64(97) + idx[0] * np.uint64(7)
    return ((h >> np.uint64(5)) % np.uint64(16)).astype(np.uint8)


def manual_attention(model: nn.Module, x: torch.Tensor, heads: int = SMALL["num_heads"]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and each block's ``softmax(q k^T * scale)`` ``[B, heads, T, T]``, from the input of ``attn.qkv``."""
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        b, t, _ = output.shape
        qkv = output.reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        seen.append(((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1))

    handles = [blk.attn.qkv.register_forward_hook(hook) for blk in model.blocks]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, seen


def rollout(attns: list[torch.Tensor]) -> torch.Tensor:
    """CLS row of ``prod_l (0.5 mean_h A_l + 0.5 I)`` (rows renormalised), all tokens ``[B, T]``."""
    t = attns[0].shape[-1]
    r = torch.eye(t, dtype=torch.float64).expand(attns[0].shape[0], t, t)
    for a in attns:
        a = 0.5 * a.double().mean(1) + 0.5 * torch.eye(t, dtype=torch.float64)
        r = (a / a.sum(-1, keepdim=True)) @ r
    return r[:, 0]


def gradcam_raw(model: nn.Module, x: torch.Tensor, prefix: int, grid: tuple[int, int], classes: bool) -> np.ndarray:
    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:, :].reshape(t.size(0), grid[0], grid[1], t.size(2)).permute(0, 3, 1, 2)

    cam = GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape)
    targets = ([ClassifierOutputTarget(k) for k in TARGETS[:x.shape[0]]] if classes
               else [lambda o: o.norm()] * x.shape[0])
    cam(input_tensor=x, targets=targets)
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    raw = (grads.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1)
    cam.activations_and_grads.release()
    return raw.astype(np.float32)


def main() -> None:
    torch.set_num_threads(1)
    versions = {n: version(n) for n in ("torch", "timm", "grad-cam", "numpy", "safetensors")}
    versions["dinov2"] = "facebookresearch/dinov2@b8931f7"
    out: dict[str, np.ndarray] = {}
    names = ["timm_dinov2", "timm_dinov2_reg", "official_dinov2", "official_dinov2_reg", "timm_deit_distilled"]
    for i, name in enumerate(names):
        model, patch, size = build(name)
        model.eval()
        for m in model.modules():  # timm's explicit path (the official code has none: SDPA either way)
            if isinstance(getattr(m, "fused_attn", None), bool):
                m.fused_attn = False
        randomise_all(model, seed=10 + i)
        save_weights(model, DATA / f"vit_{name}.safetensors")
        prefix = int(getattr(model, "num_prefix_tokens", 1 + getattr(model, "num_register_tokens", 0)))
        classes = name in ("timm_dinov2", "timm_deit_distilled")
        out[f"{name}/prefix"] = np.array(prefix)
        out[f"{name}/patch"] = np.array(patch)
        for tag, shape in (("native", (2, 3, *size)), ("big", (1, 3, BIG_GRID[0] * patch, BIG_GRID[1] * patch))):
            u = input_levels(shape, seed=20 + i) if tag == "native" else pattern_levels(shape)
            x = levels_to_input(u)
            grid = (shape[2] // patch, shape[3] // patch)
            with torch.no_grad():
                logits, attns = manual_attention(model, x)
            assert attns[0].shape[-1] == prefix + grid[0] * grid[1], (name, attns[0].shape)
            if tag == "native":
                out[f"{name}/{tag}/levels"] = u
            out[f"{name}/{tag}/shape"] = np.array(shape)
            out[f"{name}/{tag}/logits"] = logits.numpy()
            out[f"{name}/{tag}/cls_attention"] = torch.stack([a[:, :, 0] for a in attns]).numpy()
            out[f"{name}/{tag}/rollout"] = rollout(attns).float().numpy()
            out[f"{name}/{tag}/gradcam_raw"] = gradcam_raw(model, x, prefix, grid, classes)
            print(f"{name:22s} {tag:6s} x {tuple(x.shape)} tokens {attns[0].shape[-1]} out {tuple(logits.shape)}")
    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "vit_variants_reference.npz", **out)
    print("versions:", ", ".join(out["versions"]))
    for p in sorted(DATA.glob("vit_*")):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
