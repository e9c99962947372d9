"""Generate the OpenCLIP reference values that tests/test_library_models.py checks.

NOT run by the tests. Needs open_clip_torch (and its torchvision / timm) and pytorch-grad-cam
in a throwaway venv, from the repository root::

    /work/refvenv/bin/pip install open_clip_torch grad-cam
    /work/refvenv/bin/python tests/data/make_openclip_reference.py

Builds OpenCLIP's image tower ``open_clip.transformer.VisionTransformer(image_size=32,
patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2, output_dim=16)`` with random weights
(random LayerNorm weights), writes its state_dict to ``tests/data/lib_openclip_vit.safetensors``
and into ``tests/data/openclip_reference.npz``: the embedding, each block's attention as its
``nn.MultiheadAttention`` returns it with ``need_weights=True, average_attn_weights=False``
(row 0 only, ``[L, B, heads, T]``), and pytorch-grad-cam's raw cam on ``resblocks[-1].ln_1``
(CLS dropped) for the embedding's norm.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))

from open_clip.transformer import VisionTransformer  # noqa: E402

from make_library_reference import raw_cam, tokens_reshape  # noqa: E402
from make_reference import levels_to_input, save_weights, store_dtype  # noqa: E402
from make_vit_variants_reference import pattern_levels, randomise_all  # noqa: E402

CONFIG = dict(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0, output_dim=16)


def main() -> None:
    torch.set_num_threads(1)
    model = VisionTransformer(**CONFIG).eval()
    randomise_all(model, seed=60)
    with torch.no_grad():
        model.class_embedding.normal_(0.0, 0.5)
        model.positional_embedding.normal_(0.0, 0.5)
        for name, p in model.named_parameters():  # back to exactly the stored values
            p.copy_(p.to(store_dtype(name, p)).float())
    save_weights(model, DATA / "lib_openclip_vit.safetensors")
    shape = (2, 3, 32, 32)
    x = levels_to_input(pattern_levels(shape))
    seen: list[torch.Tensor] = []  # the library's own probabilities, per head, from each block's attention input
    handles = [blk.ln_1.register_forward_hook(
        lambda m, a, o, blk=blk: seen.append(blk.attn(o, o, o, need_weights=True, average_attn_weights=False)[1]))
        for blk in model.transformer.resblocks]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    rows = torch.stack([a[:, :, 0] for a in seen]).numpy()
    np.savez_compressed(DATA / "openclip_reference.npz", shape=np.array(shape), logits=out.numpy(), cls_attention=rows,
                        gradcam_raw=raw_cam(model, model.transformer.resblocks[-1].ln_1, x, tokens_reshape(1, (4, 4)),
                                            False),
                        versions=np.array([f"{n}=={version(n)}" for n in ("torch", "open_clip_torch", "grad-cam")]))
    print(out.shape, rows.shape, (DATA / "lib_openclip_vit.safetensors").stat().st_size)


if __name__ == "__main__":
    main()
