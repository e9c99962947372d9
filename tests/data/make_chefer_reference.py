"""Generate the outside-reference values that tests/test_chefer_methods.py checks.

NOT run by the tests (no ``test_`` prefix). It runs hila-chefer's own code, which is NOT a
project dependency, in a throwaway venv, from the repository root::

    # torch==2.14.1, timm==1.0.31, numpy, safetensors in /work/refvenv; einops beside it
    /work/refvenv/bin/pip install --target /tmp/i18c_extra einops
    git clone https://github.com/hila-chefer/Transformer-Explainability /tmp/i18c_te      # c3e578f
    git clone https://github.com/hila-chefer/Transformer-MM-Explainability /tmp/i18c_mm  # 58eaea8
    PYTHONPATH=/tmp/i18c_te:/tmp/i18c_extra CHEFER_MM=/tmp/i18c_mm \\
        /work/refvenv/bin/python tests/data/make_chefer_reference.py

Reference code, used as is (only patched where it cannot run here):

* ``generic_attention`` -- ``generate_relevance`` / ``avg_heads`` / ``apply_self_attention_rules``
  of Transformer-MM-Explainability's ``Transformer_MM_explainability_ViT.ipynb`` (executed from
  the notebook's own cell source, ``.cuda()`` made a no-op) on Transformer-Explainability's
  ``baselines/ViT/ViT_new.py`` ``VisionTransformer`` (the model that notebook uses).
* ``transformer_attribution`` -- ``baselines/ViT/ViT_explanation_generator.py``
  ``LRP.generate_LRP(method="transformer_attribution", start_layer=...)`` on ``ViT_LRP.py``.

Patches: ``torch.Tensor.cuda`` is a no-op (both hard-code ``.cuda()``); every LayerNorm's eps is
1e-6, as timm's and ours (``ViT_new`` builds all of them, ``ViT_LRP`` its final ``norm``, with
torch's default 1e-5); the float64 runs set torch's default dtype to float64, so that the
reference's own ``torch.eye`` / one-hot tensors follow the model. The LRP model runs with gradients on (it cannot run under ``no_grad``).

Model: tests/data/timm_vit_tiny.safetensors (timm layout, embed 48, depth 2, 3 heads, 64 x 96
input, 16 px patches, 5 classes), loaded strictly into both reference models. Four images
(seeded uint8 levels, ``x = (u - 8) / 4``), one at a time (the reference explains batch
element 0), for a given class each (``labels``) and for the predicted class (``index=None``);
in float32 and in float64 (``model.double()``: LRP's divisions by near-zero sums are unstable
in float32 on some images).

Prefix tokens (the reference models have a CLS token only; the rules are the reference's):

* ``timm_deit_distilled`` (CLS + distillation token, 5 classes) and ``timm_dinov2_reg`` (CLS + 4
  registers, LayerScale, headless) from tests/data/vit_<NAME>.safetensors, as timm modules
  (explicit attention). ``generic_attention``: the notebook's rules on gradients recorded by
  tensor hooks on timm's ``attn_drop`` outputs, ``R[0, prefix:]``. ``transformer_attribution``:
  ViT_LRP's own ``Block`` / ``LayerNorm`` / ``IndexSelect`` / ``Linear`` modules with the timm
  weights, after timm's own embedding; DeiT's two heads as one ``Linear`` over ``[CLS, dist]``
  (weights ``[W / 2, W_dist / 2]``, the mean of the heads); DINOv2's LayerScale folded into
  ``proj`` / ``fc2`` (``gamma`` > 0: the z+ rule is then the same as passing relevance through
  LayerScale unchanged, ours); headless: relevance starts as ``out * d|out| / d out`` at the
  CLS token (gradient x input of the CLS-norm target). The map is ``rollout[0, 0, prefix:]``.

Writes tests/data/chefer_reference.npz (maps, inputs as levels, predicted classes, versions,
commits).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

DATA = Path(__file__).resolve().parent
MM = Path(os.environ.get("CHEFER_MM", "/tmp/i18c_mm"))
TE = Path(os.environ.get("CHEFER_TE", "/tmp/i18c_te"))
COMMITS = {"Transformer-Explainability": "c3e578f76b954e8528afeaaee26de3f07e3fe559",
           "Transformer-MM-Explainability": "58eaea85ac9c34aff052f368514b35d2e4c8dd3c"}
LABELS = [1, 3, 0, 4]
SIZE, PATCH = (64, 96), 16

torch.Tensor.cuda = lambda self, *a, **k: self  # the reference hard-codes .cuda(); run on the CPU
torch.nn.Module.cuda = lambda self, *a, **k: self

from safetensors.torch import load_file  # noqa: E402

from baselines.ViT import ViT_LRP, ViT_new  # noqa: E402
from baselines.ViT.ViT_explanation_generator import LRP  # noqa: E402


def notebook_generate_relevance():
    """``generate_relevance`` and its helpers, executed from the notebook's own cell."""
    nb = json.loads((MM / "Transformer_MM_explainability_ViT.ipynb").read_text())
    cell = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"
                and "def generate_relevance" in "".join(c["source"]))
    scope = {"torch": torch, "np": np}
    exec(cell, scope)
    return scope


def levels(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 16, size=(n, 3, *SIZE), dtype=np.uint8)


def to_input(u: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy((u.astype(np.float32) - 8.0) / 4.0).to(dtype)


def base_models(dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    sd = {k: v.float() for k, v in load_file(str(DATA / "timm_vit_tiny.safetensors")).items()}
    kw = dict(img_size=SIZE, patch_size=PATCH, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4, qkv_bias=True,
              num_classes=5)
    new = ViT_new.VisionTransformer(norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), **kw)
    lrp = ViT_LRP.VisionTransformer(**kw)
    lrp.norm.eps = 1e-6
    for m in (new, lrp):
        m.load_state_dict(sd, strict=True)
        m.to(dtype).eval()
        assert all(n.eps == 1e-6 for n in m.modules() if isinstance(n, nn.LayerNorm))
    return new, lrp


def run_base(out: dict, nb: dict) -> None:
    u = levels(31, len(LABELS))
    out["base/levels"] = u
    out["base/labels"] = np.array(LABELS)
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        torch.set_default_dtype(dtype)  # the reference's torch.eye(...) follow the model's dtype
        new, lrp = base_models(dtype)
        gen = LRP(lrp)
        for target in ("labels", "predicted"):
            ga, ta, ta1, pred = [], [], [], []
            for i in range(len(LABELS)):
                x = to_input(u[i:i + 1], dtype)
                index = LABELS[i] if target == "labels" else None
                with torch.no_grad():
                    pred.append(int(new(x).argmax(-1)))
                ga.append(nb["generate_relevance"](new, x, index=index).detach().double().numpy())
                ta.append(gen.generate_LRP(x, index=index, method="transformer_attribution", start_layer=0)
                          .detach().double().numpy()[0])
                ta1.append(gen.generate_LRP(x, index=index, method="transformer_attribution", start_layer=1)
                           .detach().double().numpy()[0])
            out[f"base/{tag}/{target}/generic_attention"] = np.stack(ga)
            out[f"base/{tag}/{target}/transformer_attribution"] = np.stack(ta)
            out[f"base/{tag}/{target}/transformer_attribution_start1"] = np.stack(ta1)
            out[f"base/{tag}/predicted_classes"] = np.array(pred)
    torch.set_default_dtype(torch.float32)


# ---- prefix tokens: timm models with the reference's rules ------------------------------------------------

def timm_model(name: str) -> tuple[nn.Module, int]:
    import timm

    small = dict(embed_dim=32, depth=2, num_heads=2)
    if name == "timm_deit_distilled":
        m = timm.create_model("deit_small_distilled_patch16_224", pretrained=False, num_classes=5, img_size=(64, 96),
                              dynamic_img_size=True, **small)
    else:
        m = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, img_size=56,
                              dynamic_img_size=True, **small)
    m.load_state_dict({k: v.float() for k, v in load_file(str(DATA / f"vit_{name}.safetensors")).items()}, strict=True)
    for mod in m.modules():
        if isinstance(getattr(mod, "fused_attn", None), bool):
            mod.fused_attn = False
    return m.double().eval(), m.num_prefix_tokens


def score(name: str, out: torch.Tensor, label: int) -> torch.Tensor:
    return out[0, label] if name == "timm_deit_distilled" else out[0].norm()


def variant_generic_attention(name: str, model: nn.Module, x: torch.Tensor, label: int, prefix: int, nb: dict):
    """The notebook's ``generate_relevance`` rules on timm's attention and its gradient."""
    attn, grads, handles = [], {}, []

    def hook(i):
        def fn(module, args, output):
            attn.append(output)
            output.register_hook(lambda g: grads.__setitem__(i, g))
        return fn

    for i, blk in enumerate(model.blocks):
        handles.append(blk.attn.attn_drop.register_forward_hook(hook(i)))
    try:
        s = score(name, model(x), label)
        model.zero_grad()
        s.backward()
    finally:
        for h in handles:
            h.remove()
    t = attn[0].shape[-1]
    r = torch.eye(t, t, dtype=x.dtype)
    for i in range(len(attn)):
        r += nb["apply_self_attention_rules"](r, nb["avg_heads"](attn[i].detach(), grads[i]))
    return r[0, prefix:].numpy()


def reference_blocks(model: nn.Module) -> nn.ModuleList:
    """ViT_LRP ``Block``s with the timm block weights (LayerScale folded into proj / fc2)."""
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    out = nn.ModuleList()
    for blk in model.blocks:
        ref = ViT_LRP.Block(dim, heads, mlp_ratio=4, qkv_bias=True)
        sd = {k: v.clone() for k, v in blk.state_dict().items() if "gamma" not in k}
        for branch, layer in (("ls1", "attn.proj"), ("ls2", "mlp.fc2")):
            gamma = getattr(blk, branch).gamma.detach() if hasattr(getattr(blk, branch), "gamma") else None
            if gamma is not None:
                assert (gamma > 0).all()
                sd[f"{layer}.weight"] = gamma[:, None] * sd[f"{layer}.weight"]
                sd[f"{layer}.bias"] = gamma * sd[f"{layer}.bias"]
        ref.load_state_dict(sd, strict=True)
        out.append(ref)
    return out.double().eval()


def variant_transformer_attribution(name: str, model: nn.Module, x: torch.Tensor, label: int, prefix: int):
    blocks = reference_blocks(model)
    norm = ViT_LRP.LayerNorm(model.embed_dim, eps=model.norm.eps).double()
    norm.load_state_dict(model.norm.state_dict())
    pool = ViT_LRP.IndexSelect()
    distilled = name == "timm_deit_distilled"
    if distilled:  # mean of the two heads = one Linear over [CLS, dist]
        head = ViT_LRP.Linear(2 * model.embed_dim, model.num_classes).double()
        with torch.no_grad():
            head.weight.copy_(torch.cat([model.head.weight, model.head_dist.weight], 1) / 2)
            head.bias.copy_((model.head.bias + model.head_dist.bias) / 2)
    h = model._pos_embed(model.patch_embed(x))
    for blk in blocks:
        h = blk(h)
    h = norm(h)
    idx = torch.tensor([0, 1] if distilled else [0])
    pooled = pool(h, dim=1, indices=idx).reshape(1, -1)
    out = head(pooled) if distilled else pooled
    with torch.no_grad():
        assert torch.allclose(out, model(x), atol=1e-10)  # the same function as timm's model
    s = score(name, out, label)
    blocks.zero_grad()
    s.backward(retain_graph=True)
    if distilled:
        one_hot = torch.zeros(1, model.num_classes, dtype=x.dtype)
        one_hot[0, label] = 1
        cam = head.relprop(one_hot, alpha=1)
    else:  # gradient x input of |out| at the CLS token
        cam = out.detach() * (out.detach() / out.detach().norm())
    cam = pool.relprop(cam.reshape(1, len(idx), -1), alpha=1)
    cam = norm.relprop(cam, alpha=1)
    for blk in reversed(blocks):
        cam = blk.relprop(cam, alpha=1)
    cams = []
    for blk in blocks:  # ViT_LRP.VisionTransformer.relprop, method="transformer_attribution"
        grad = blk.attn.get_attn_gradients()
        c = blk.attn.get_attn_cam()
        c = c[0].reshape(-1, c.shape[-1], c.shape[-1])
        grad = grad[0].reshape(-1, grad.shape[-1], grad.shape[-1])
        cams.append((grad * c).clamp(min=0).mean(dim=0).unsqueeze(0))
    rollout = ViT_LRP.compute_rollout_attention(cams, start_layer=0)
    return rollout[0, 0, prefix:].detach().numpy()


def run_variants(out: dict, nb: dict) -> None:
    torch.set_default_dtype(torch.float64)
    for name in ("timm_deit_distilled", "timm_dinov2_reg"):
        model, prefix = timm_model(name)
        size = (64, 96) if name == "timm_deit_distilled" else (56, 56)
        u = np.random.default_rng(41).integers(0, 16, size=(2, 3, *size), dtype=np.uint8)
        out[f"{name}/levels"] = u
        out[f"{name}/prefix"] = np.array(prefix)
        ga, ta = [], []
        for i in range(2):
            x = to_input(u[i:i + 1], torch.float64)
            ga.append(variant_generic_attention(name, model, x, LABELS[i], prefix, nb))
            ta.append(variant_transformer_attribution(name, model, x, LABELS[i], prefix))
        out[f"{name}/generic_attention"] = np.stack(ga)
        out[f"{name}/transformer_attribution"] = np.stack(ta)


def main() -> None:
    torch.set_num_threads(1)
    nb = notebook_generate_relevance()
    out: dict[str, np.ndarray] = {}
    run_base(out, nb)
    run_variants(out, nb)
    versions = {n: version(n) for n in ("torch", "timm", "numpy", "safetensors", "einops")}
    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()]
                               + [f"{k}@{v}" for k, v in COMMITS.items()])
    for repo, path in (("Transformer-Explainability", TE), ("Transformer-MM-Explainability", MM)):
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert not head.strip() or head.strip() == COMMITS[repo], (repo, head)
    np.savez_compressed(DATA / "chefer_reference.npz", **out)
    for k in sorted(out):
        if "f32" in k and k.replace("f32", "f64") in out:
            d = np.abs(out[k] - out[k.replace("f32", "f64")]).max() / np.abs(out[k.replace("f32", "f64")]).max()
            print(f"{k}: f32 vs f64 max rel diff {d:.2e}")
    print("versions:", ", ".join(out["versions"]), f"size {(DATA / 'chefer_reference.npz').stat().st_size} bytes")


if __name__ == "__main__":
    main()
