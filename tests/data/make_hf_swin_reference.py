"""Generate the transformers Swin reference that tests/test_library_models.py checks.

NOT run by the tests. In a throwaway venv with transformers and pytorch-grad-cam, from the
repository root: ``/work/refvenv/bin/python tests/data/make_hf_swin_reference.py``.

A small ``SwinForImageClassification`` (patch 4, embed 16, depths (1, 1), heads (1, 2), window 4,
5 classes; random weights and LayerNorm weights) saved to ``tests/data/hf_swin/``; in
``tests/data/hf_swin_reference.npz`` its logits on a 32 x 48 input and pytorch-grad-cam's raw
cam on the last block's ``layernorm_before`` (tokens of the last stage, 4 x 6, reshaped
row-major to ``B x C x 4 x 6``).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import transformers

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))

from make_library_reference import Logits, randomise_hf, raw_cam, tokens_reshape  # noqa: E402
from make_reference import levels_to_input  # noqa: E402
from make_vit_variants_reference import pattern_levels  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                  window_size=4, num_labels=5, attn_implementation="eager")
    hf = transformers.SwinForImageClassification(cfg).eval()
    randomise_hf(hf, seed=70)
    hf.config.architectures = [type(hf).__name__]
    hf.save_pretrained(DATA / "hf_swin")
    shape = (2, 3, 32, 48)
    x = levels_to_input(pattern_levels(shape))
    wrapped = Logits(hf, True, True)
    with torch.no_grad():
        logits = wrapped(x).numpy()
    layer = hf.swin.encoder.layers[-1].blocks[-1].layernorm_before
    np.savez_compressed(DATA / "hf_swin_reference.npz", shape=np.array(shape), logits=logits,
                        gradcam_raw=raw_cam(wrapped, layer, x, tokens_reshape(0, (4, 6)), True),
                        versions=np.array([f"{n}=={version(n)}" for n in ("torch", "transformers", "grad-cam")]))
    print(logits.shape)


if __name__ == "__main__":
    main()
