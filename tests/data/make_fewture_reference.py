"""Generate the outside-reference fixture that tests/test_multi_attention.py checks.

NOT run by the tests (no ``test_`` prefix). The reference is the multi-attention backbone of
the FewTURE fork the original guide comes from:

    repository  github.com/dinhmanhhai/FewTURE-HaiDM
    file        models/vision_transformer.py
    commit      5263789f35fd16d1b64466107a5eaf99f20557b7

Its code is NOT part of this repository. To regenerate, copy that file into a folder outside
the repository with two stubs for its imports (``utils.py`` defining
``trunc_normal_ = torch.nn.init.trunc_normal_``; a ``timm`` package whose
``timm/models/registry.py`` defines an identity ``register_model`` and
``timm/models/layers.py`` a ``to_2tuple``), then, from the repository root::

    python3 -m venv /tmp/fewvenv
    /tmp/fewvenv/bin/pip install torch==2.13.0 numpy safetensors
    /tmp/fewvenv/bin/python tests/data/make_fewture_reference.py /tmp/fewref

Writes ``tests/data/fewture_<config>.safetensors`` (the reference's ``state_dict``; tensors of
two or more dimensions stored as ``float8_e4m3fn``, the others as float16, to keep the files
small; the model is first set to exactly those values, so every expected output below is
the reference's float32 computation from the stored weights) and
``tests/data/fewture_reference.npz`` (``attn.<i>`` of every block for ``all_flags``, of the
last block for the others): per config ``<config>/input`` (uint8 levels ``u``;
``x = (u - 128) / 64`` is exact in float32), ``<config>/tokens`` (the reference's
``forward(x, return_all_tokens=True)``, ``[B, 1 + N, C]``), ``<config>/attn.<i>`` (block
``i``'s attention probabilities as its ``attn_drop`` module received them: MAB
``[B * nW, heads, N, N]``, OCAB ``[B * nW, heads, w^2, W_ov^2]``), and the config's keyword
arguments as JSON under ``<config>/kwargs``.

Configs (width 48, depth 2, 3 heads, patch 16): ``plain``; ``all_flags`` (MAB + OCAB + DRFF:
the reference builds no OCAB, so this is also the MAB + DRFF checkpoint) at 112 px = a 7 x 7 grid, window 7;
``mab_shift``: 160 px = 10 x 10 grid, window 7 (padding to 14, cyclic shift 3 in block 1);
``ocab``: 128 px = 8 x 8 grid, window 8 (the reference runs OCAB only when the grid is one
window and ``int(1.5 w) - w`` is even).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent
COMMON = {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 16}
CONFIGS = {
    "plain": ({"image_size": 112}, 2),
    "all_flags": ({"image_size": 112, "use_mab": True, "use_ocab": True, "use_drff": True, "window_size": 7}, 2),
    "mab_shift": ({"image_size": 160, "use_mab": True, "window_size": 7}, 1),
    "ocab": ({"image_size": 128, "use_ocab": True, "window_size": 8}, 1),
}


def build(ref, kwargs: dict) -> torch.nn.Module:
    flags = {k: v for k, v in kwargs.items() if k != "image_size"}
    return ref.VisionTransformer(img_size=[kwargs["image_size"]], mlp_ratio=4, qkv_bias=True,
                                 **{**COMMON, **flags}).eval()


def _storage_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float8_e4m3fn if t.ndim >= 2 else torch.float16


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights of a useful scale (norm weights near 1), rounded to their storage dtype."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm_weight = name.endswith("weight") and p.ndim == 1
            value = 1.0 + 0.1 * noise if is_norm_weight else 0.5 * noise if "bias_table" in name else 0.1 * noise
            p.copy_(value.to(_storage_dtype(p)).float())


def main(ref_dir: str) -> None:
    sys.path.insert(0, ref_dir)
    import vision_transformer as ref  # the reference file, outside this repository

    arrays: dict[str, np.ndarray] = {}
    for seed, (name, (kwargs, batch)) in enumerate(CONFIGS.items()):
        model = build(ref, kwargs)
        randomise(model, seed)
        size = kwargs["image_size"]
        u = torch.randint(0, 256, (batch, 3, size, size), generator=torch.Generator().manual_seed(100 + seed),
                          dtype=torch.uint8)
        x = (u.float() - 128) / 64
        captured: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, a, out, n=n: captured.__setitem__(n, out.detach().clone()))
                 for n, m in model.named_modules() if n.endswith("attn_drop") and n.startswith("blocks.")]
        with torch.no_grad():
            tokens = model(x, return_all_tokens=True)
        for h in hooks:
            h.remove()
        sd = {k: v.to(_storage_dtype(v)) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        save_file({k: v.contiguous() for k, v in sd.items()}, str(OUT / f"fewture_{name}.safetensors"))
        arrays[f"{name}/input"] = u.numpy()
        arrays[f"{name}/tokens"] = tokens.numpy()
        arrays[f"{name}/kwargs"] = np.array(json.dumps({**COMMON, **kwargs}))
        for mod_name, attn in captured.items():
            block = mod_name.split(".")[1]
            if name != "plain" and (name in ("all_flags",) or block == "1"):
                arrays[f"{name}/attn.{block}"] = attn.numpy()
        print(name, tuple(tokens.shape), {k: tuple(v.shape) for k, v in captured.items()})
    arrays["versions/torch"] = np.array(torch.__version__)
    np.savez_compressed(OUT / "fewture_reference.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fewref")
