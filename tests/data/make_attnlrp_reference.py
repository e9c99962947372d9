"""Generate the lxt reference relevance that tests/test_attnlrp.py checks.

NOT run by the tests. lxt 2.1's package ``__init__`` imports transformers model code that
transformers 5.x no longer has, and torchvision (which does not import beside torch 2.13.0), so
it runs in a throwaway venv from the repository root::

    python3 -m venv /tmp/lxtvenv   # torch 2.14.1 + torchvision 0.29.1 (e.g. a .pth to /work/refvenv)
    /tmp/lxtvenv/bin/pip install --no-deps lxt==2.1
    /tmp/lxtvenv/bin/python tests/data/make_attnlrp_reference.py

lxt's rule modules are imported directly (``lxt.efficient.rules`` / ``patches`` /
``models.vit_torch``; the package ``__init__`` files are skipped because of the transformers
import, their code is not needed). A torchvision ``VisionTransformer`` (64 x 64 px, patch 16,
2 layers, width 64, 4 heads, MLP 128, 10 classes) gets seeded random weights, rounded to
float16 so that both sides hold exactly the same numbers; they are written in the built-in
ViT's (timm) layout to ``attnlrp_vit.safetensors``. Two rule sets, float64, the target is each
image's class in ``targets``:

* ``cp``: lxt's own map for torchvision's ViT (``lxt.efficient.models.vit_torch.cp_LRP``:
  GELU identity rule, LayerNorm std detached, CP-LRP in ``nn.MultiheadAttention``), applied
  with ``lxt.efficient.monkey_patch`` semantics (``patch_method`` on the classes).
* ``attnlrp``: the same with lxt's AttnLRP attention wrapper (``wrap_attention_forward``:
  ``divide_gradient`` of query / key by 4 and value by 2), put on ``nn.MultiheadAttention``'s
  query / key / value inputs (equal: the in-projection is linear).

Relevance as lxt's ViT example (``examples/vit_torch.py``): ``(input * input.grad).sum(1)``,
no zennit rules (the epsilon rule with the bias absorbed on Linear / Conv2d).
"""

from __future__ import annotations

import json
import sys
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.models import vision_transformer

import lxt

_ROOT = Path(lxt.__file__).parent
for _name in ("lxt.efficient", "lxt.efficient.models"):  # skip the __init__ files (transformers imports)
    _pkg = types.ModuleType(_name)
    _pkg.__path__ = [str(_ROOT.joinpath(*_name.split(".")[1:]))]
    sys.modules[_name] = _pkg
from lxt.efficient.models.vit_torch import cp_LRP  # noqa: E402
from lxt.efficient.patches import layer_norm_forward, non_linear_forward, patch_method  # noqa: E402
from lxt.efficient.rules import divide_gradient  # noqa: E402

DATA = Path(__file__).resolve().parent
CONFIG = {"image_size": 64, "patch_size": 16, "num_layers": 2, "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128,
          "num_classes": 10}
LXT_COMMIT = "3cd6d0d32dc873be6ad7f651599527c88d8385b8"  # tag v2.1 (PyPI lxt 2.1: same rules.py / patches.py)


def attnlrp_multi_head_attention_forward(self, query, key, value, *args, **kwargs):
    """lxt's ``wrap_attention_forward`` (AttnLRP uniform rule) on ``nn.MultiheadAttention``."""
    query = divide_gradient(query, 4)
    key = divide_gradient(key, 4)
    value = divide_gradient(value, 2)
    return self.original_forward(query, key, value, *args, **kwargs)


def build() -> vision_transformer.VisionTransformer:
    torch.manual_seed(0)
    model = vision_transformer.VisionTransformer(**CONFIG).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # LayerNorm gains around 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                std = 0.02 if "pos_embedding" in name or "class_token" in name else p.shape[-1] ** -0.5 if p.ndim > 1 else 0.1
                if "conv_proj.weight" in name:
                    std = (3 * 16 * 16) ** -0.5
                p.copy_(std * torch.randn(p.shape, generator=gen))
            p.copy_(p.half().float())  # exactly representable on both sides
    return model


def to_timm_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"patch_embed.proj.weight": sd["conv_proj.weight"], "patch_embed.proj.bias": sd["conv_proj.bias"],
           "cls_token": sd["class_token"], "pos_embed": sd["encoder.pos_embedding"],
           "norm.weight": sd["encoder.ln.weight"], "norm.bias": sd["encoder.ln.bias"],
           "head.weight": sd["heads.head.weight"], "head.bias": sd["heads.head.bias"]}
    for i in range(CONFIG["num_layers"]):
        src, dst = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        pairs = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.out_proj": "attn.proj", "mlp.0": "mlp.fc1",
                 "mlp.3": "mlp.fc2"}
        for a, b in pairs.items():
            out[f"{dst}{b}.weight"], out[f"{dst}{b}.bias"] = sd[f"{src}{a}.weight"], sd[f"{src}{a}.bias"]
        out[f"{dst}attn.qkv.weight"] = sd[f"{src}self_attention.in_proj_weight"]
        out[f"{dst}attn.qkv.bias"] = sd[f"{src}self_attention.in_proj_bias"]
    return {k: v.detach().half().contiguous() for k, v in out.items()}


def relevance(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, patch_map: dict) -> tuple:
    """lxt relevance ``(input * input.grad).sum(1)`` under ``patch_map``; the classes are restored after."""
    originals = {cls: dict(vars(cls)) for cls in patch_map}
    try:
        for target, patch in patch_map.items():
            assert patch(target), target
        x = x.clone().requires_grad_(True)
        y = model(x)
        y.gather(1, targets[:, None]).sum().backward()
        return (x * x.grad).sum(1).detach(), y.detach()
    finally:
        for cls, attrs in originals.items():
            for k in [k for k in vars(cls) if k not in attrs]:
                delattr(cls, k)
            for k in ("forward",):
                setattr(cls, k, attrs[k])


def main() -> None:
    model = build()
    save_file(to_timm_layout(model.state_dict()), str(DATA / "attnlrp_vit.safetensors"))
    model = model.double()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 64, 64, generator=gen).half().double()
    with torch.no_grad():
        targets = torch.tensor([model(x)[0].argmax().item(), 3, 7])
    nn = vision_transformer.nn
    from functools import partial
    attnlrp_map = dict(cp_LRP)
    attnlrp_map[nn.MultiheadAttention] = partial(patch_method, attnlrp_multi_head_attention_forward, keep_original=True)
    out: dict[str, np.ndarray] = {"x": x.float().numpy(), "targets": targets.numpy()}
    for mode, patch_map in (("attnlrp", attnlrp_map), ("cp", cp_LRP)):
        rel, logits = relevance(model, x, targets, patch_map)
        out[f"{mode}_relevance"] = rel.float().numpy()  # float32: 1e-7, below the tests' 1e-5
        out["logits"] = logits.numpy()
    x0 = x.clone().requires_grad_(True)  # the plain gradient x input, to show the rules change the map
    model(x0).gather(1, targets[:, None]).sum().backward()
    out["gradient_x_input"] = (x0 * x0.grad).sum(1).detach().float().numpy()
    meta = {"config": CONFIG, "dtype": "float64", "lxt": version("lxt"), "lxt_commit": LXT_COMMIT,
            "torch": torch.__version__, "torchvision": version("torchvision")}
    np.savez_compressed(DATA / "attnlrp_reference.npz", meta=np.array(json.dumps(meta)), **out)
    print(json.dumps(meta), {k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
