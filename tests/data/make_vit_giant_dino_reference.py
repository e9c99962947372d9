"""Generate the reference that tests/test_vit_giant_dino.py checks: DINOv2 ViT-g's SwiGLU FFN in the
official and timm layouts, and DINO v1's position-embedding resize.

NOT run by the tests. Needs timm, the official DINOv2 code and the official DINO code (throwaway
venv), from the repository root::

    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2src   # commit b8931f7
    git clone https://github.com/facebookresearch/dino /tmp/dinosrc        # commit 7c446df
    XFORMERS_DISABLED=1 DINOV2_SRC=/tmp/dinov2src DINO_SRC=/tmp/dinosrc \\
        /work/refvenv/bin/python tests/data/make_vit_giant_dino_reference.py

Three small models (embed 32, depth 2, 2 heads; random weights as make_vit_variants_reference.py),
each saved to ``tests/data/vit_<NAME>.safetensors``:

* ``timm_dinov2_giant``: timm ``vit_giant_patch14_dinov2`` (``SwiGLUPacked``: ``mlp.fc1`` packs gate
  and value, ``mlp_ratio=2.66667 * 2``: fc1 170 wide, fc2's input 85), 5 classes, 56 x 84;
* ``official_dinov2_giant``: official ``DinoVisionTransformer(ffn_layer="swiglufused")``
  (``mlp.w12`` / ``mlp.w3``, ``SwiGLUFFNFused`` width ``(int(128 * 2 / 3) + 7) // 8 * 8 = 88``), headless, 56 x 56;
* ``dino_v1``: official DINO ``VisionTransformer(img_size=[64], patch_size=16)``, headless, its plain
  backbone state_dict as DINO releases it; at 480 x 320 its own ``interpolate_pos_encoding`` resizes
  by the scale factor ``(g + 0.1) / 4`` (bicubic, no antialias).

``tests/data/vit_giant_dino_reference.npz`` holds, per ``NAME/{native,big}`` (big: a 30 x 20 patch
grid, inputs from make_vit_variants_reference.pattern_levels): ``logits`` (the model's output: logits
or the CLS feature), ``cls_attention`` ``[L, B, heads, T]`` (``softmax(q k^T * scale)`` by hand from
each block's ``attn.qkv`` output), ``shape``, native ``levels``; ``NAME/prefix``, ``NAME/patch``; versions.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))
sys.path.insert(0, os.environ.get("DINOV2_SRC", "/tmp/dinov2src"))
sys.path.insert(0, os.environ.get("DINO_SRC", "/tmp/dinosrc"))

import timm  # noqa: E402

from make_reference import input_levels, levels_to_input, save_weights  # noqa: E402
from make_vit_variants_reference import BIG_GRID, SMALL, manual_attention, pattern_levels, randomise_all  # noqa: E402


def build(name: str) -> tuple[nn.Module, int, tuple[int, int]]:
    """model, patch size, native input size."""
    if name == "timm_dinov2_giant":
        return timm.create_model("vit_giant_patch14_dinov2", pretrained=False, num_classes=5, img_size=(56, 84),
                                 dynamic_img_size=True, **SMALL), 14, (56, 84)
    if name == "official_dinov2_giant":
        from dinov2.models.vision_transformer import DinoVisionTransformer

        return DinoVisionTransformer(img_size=56, patch_size=14, init_values=1e-5, block_chunks=0, mlp_ratio=4,
                                     ffn_layer="swiglufused", interpolate_antialias=False, interpolate_offset=0.1,
                                     **SMALL), 14, (56, 56)
    if name == "dino_v1":
        from vision_transformer import VisionTransformer  # DINO's own file

        return VisionTransformer(img_size=[64], patch_size=16, mlp_ratio=4, qkv_bias=True,
                                 norm_layer=partial(nn.LayerNorm, eps=1e-6), **SMALL), 16, (64, 64)
    raise ValueError(name)


def main() -> None:
    torch.set_num_threads(1)
    versions = {n: version(n) for n in ("torch", "timm", "numpy", "safetensors")}
    versions.update(dinov2="facebookresearch/dinov2@b8931f7", dino="facebookresearch/dino@7c446df")
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(["timm_dinov2_giant", "official_dinov2_giant", "dino_v1"]):
        model, patch, size = build(name)
        model.eval()
        for m in model.modules():
            if isinstance(getattr(m, "fused_attn", None), bool):
                m.fused_attn = False
        randomise_all(model, seed=60 + i)
        save_weights(model, DATA / f"vit_{name}.safetensors")
        out[f"{name}/prefix"] = np.array(1)
        out[f"{name}/patch"] = np.array(patch)
        for tag, shape in (("native", (2, 3, *size)), ("big", (1, 3, BIG_GRID[0] * patch, BIG_GRID[1] * patch))):
            u = input_levels(shape, seed=70 + i) if tag == "native" else pattern_levels(shape)
            with torch.no_grad():
                logits, attns = manual_attention(model, levels_to_input(u))
            if tag == "native":
                out[f"{name}/{tag}/levels"] = u
            out[f"{name}/{tag}/shape"] = np.array(shape)
            out[f"{name}/{tag}/logits"] = logits.numpy()
            out[f"{name}/{tag}/cls_attention"] = torch.stack([a[:, :, 0] for a in attns]).numpy()
            print(f"{name:22s} {tag:6s} {tuple(shape)} tokens {attns[0].shape[-1]} out {tuple(logits.shape)}")
    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "vit_giant_dino_reference.npz", **out)


if __name__ == "__main__":
    main()
