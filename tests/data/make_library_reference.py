"""Generate the outside-reference values that tests/test_library_models.py checks.

NOT run by the tests. Needs timm, transformers and pytorch-grad-cam (throwaway venv), from the
repository root::

    /work/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm transformers grad-cam safetensors
    /work/refvenv/bin/python tests/data/make_library_reference.py

Writes, for each model ``NAME`` (random weights, random LayerNorm weights, as make_reference.py):

* timm ``test_vit`` (timm's own test config: embed 64, depth 6, 2 heads, 16 px patches, 160 x
  160) with 5 classes -> ``tests/data/lib_timm_test_vit.safetensors`` (its state_dict, for
  ``--model timm:test_vit --checkpoint``);
* a small timm ``SwinTransformer`` (embed 16, depths (1, 1), heads (1, 2), window 4, 32 x 48
  input, 5 classes) -> ``tests/data/lib_timm_swin.safetensors``;
* transformers ViT, DeiT (with teacher: distillation token), Dinov2, Dinov2WithRegisters (4
  registers) and CLIP vision (hidden 32, 2 layers, 2 heads, patch 8, 32 x 32) ->
  ``tests/data/hf_<NAME>/`` (``save_pretrained``: config.json + model.safetensors);
* ``tests/data/library_reference.npz``: per model and size (``native``; ``big`` = a 30 x 20
  patch grid for the transformers models): ``logits`` (or the headless feature), ``cls_attention``
  ``[L, B, heads, T]`` (transformers: ``output_attentions=True``; timm: a manual
  ``softmax(q k^T * scale)`` from each block's ``attn.qkv`` input), ``gradcam_raw``
  (pytorch-grad-cam 1.5.7, reshape transform dropping the prefix tokens; Swin: NHWC -> NCHW),
  the input shape (levels from make_vit_variants_reference.pattern_levels) and the versions.
"""

from __future__ import annotations

import inspect
import re
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))

import timm  # noqa: E402
import transformers  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from make_reference import levels_to_input, store_dtype  # noqa: E402
from make_vit_variants_reference import manual_attention, pattern_levels, randomise_all, SMALL  # noqa: E402
from make_reference import save_weights  # noqa: E402

TARGETS = [1, 3]
HF_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                patch_size=8, attn_implementation="eager")


def raw_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, reshape, classes: bool) -> np.ndarray:
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    targets = ([ClassifierOutputTarget(k) for k in TARGETS[:x.shape[0]]] if classes
               else [lambda o: o.norm()] * x.shape[0])
    cam(input_tensor=x, targets=targets)
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    cam.activations_and_grads.release()
    return (grads.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1).astype(np.float32)


def tokens_reshape(prefix: int, grid: tuple[int, int]):
    return lambda t: t[:, prefix:, :].reshape(t.size(0), grid[0], grid[1], t.size(2)).permute(0, 3, 1, 2)


@torch.no_grad()
def randomise_hf(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2 and not any(t in name for t in ("cls_token", "distillation_token", "register_tokens",
                                                        "position_embeddings", "class_embedding", "mask_token")):
            p.copy_(torch.randn(p.shape, generator=g) * 1.5 / p[0].numel() ** 0.5)
        elif name.endswith("weight") and p.ndim == 1:
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_((0.5 if p.ndim >= 2 or "class_embedding" in name else 0.1) * torch.randn(p.shape, generator=g))


class Logits(nn.Module):
    """pytorch-grad-cam needs a module returning a tensor: the HF model's logits / feature."""

    def __init__(self, hf: nn.Module, classes: bool, interpolate: bool):
        super().__init__()
        self.hf, self.classes, self.interpolate = hf, classes, interpolate

    def forward(self, x):
        kw = {"interpolate_pos_encoding": True} if self.interpolate else {}
        out = self.hf(pixel_values=x, **kw)
        if self.classes:
            return out.logits
        kind = self.hf.config.model_type
        return out.last_hidden_state[:, 0] if kind in ("vit", "deit", "dinov2", "dinov2_with_registers") \
            else out.pooler_output


def last_block_norm(hf: nn.Module) -> nn.Module:
    """The last layer's pre-attention norm (ViT / DeiT ``layernorm_before``, CLIP ``layer_norm1``,
    Dinov2 ``norm1``), found by the loaded model's own module names."""
    found = [(int(m.group(1)), mod) for n, mod in hf.named_modules()
             if (m := re.fullmatch(r".*layers?\.(\d+)\.(?:layernorm_before|layer_norm1|norm1)", n))]
    return max(found, key=lambda t: t[0])[1]


def hf_models():
    t = transformers
    yield "vit", t.ViTForImageClassification(t.ViTConfig(num_labels=5, **HF_SMALL)), 1, True
    yield "deit", t.DeiTForImageClassificationWithTeacher(t.DeiTConfig(num_labels=5, **HF_SMALL)), 2, True
    yield "dinov2", t.Dinov2Model(t.Dinov2Config(**HF_SMALL, layerscale_value=1.0)), 1, False
    yield "dinov2_reg", t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(**HF_SMALL, num_register_tokens=4)), 5, False
    yield "clip", t.CLIPVisionModel(t.CLIPVisionConfig(**HF_SMALL)), 1, False


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    versions = {n: version(n) for n in ("torch", "timm", "transformers", "grad-cam", "numpy", "safetensors")}
    # --- timm test_vit through --model timm:test_vit --checkpoint
    vit = timm.create_model("test_vit", pretrained=False, num_classes=5).eval()
    for m in vit.modules():
        if isinstance(getattr(m, "fused_attn", None), bool):
            m.fused_attn = False
    randomise_all(vit, seed=40)
    save_weights(vit, DATA / "lib_timm_test_vit.safetensors")
    shape = (2, 3, 160, 160)
    x = levels_to_input(pattern_levels(shape))
    with torch.no_grad():
        logits, attns = manual_attention(vit, x, heads=vit.blocks[0].attn.num_heads)
    out.update({"timm_test_vit/native/shape": np.array(shape), "timm_test_vit/native/logits": logits.numpy(),
                "timm_test_vit/native/cls_attention": torch.stack([a[:, :, 0] for a in attns]).numpy(),
                "timm_test_vit/native/gradcam_raw": raw_cam(vit, vit.blocks[-1].norm1, x, tokens_reshape(1, (10, 10)),
                                                            True)})
    # --- a small timm Swin (NHWC features): Grad-CAM with pytorch-grad-cam's NHWC reshape
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, embed_dim=16,
                             depths=(1, 1), num_heads=(1, 2), window_size=4, img_size=(32, 48)).eval()
    randomise_all(swin, seed=41)
    save_weights(swin, DATA / "lib_timm_swin.safetensors")
    shape = (2, 3, 32, 48)
    x = levels_to_input(pattern_levels(shape))
    with torch.no_grad():
        out["timm_swin/native/logits"] = swin(x).numpy()
    out["timm_swin/native/shape"] = np.array(shape)
    out["timm_swin/native/gradcam_raw"] = raw_cam(swin, swin.layers[-1].blocks[-1].norm1, x,
                                                  lambda t: t.permute(0, 3, 1, 2), True)
    # --- transformers
    for i, (name, hf, prefix, classes) in enumerate(hf_models()):
        hf.eval()
        randomise_hf(hf, seed=50 + i)
        hf.config.architectures = [type(hf).__name__]
        hf.save_pretrained(DATA / f"hf_{name}")
        interpolate = "interpolate_pos_encoding" in inspect.signature(hf.forward).parameters
        wrapped = Logits(hf, classes, interpolate)
        for tag, shape in (("native", (2, 3, 32, 32)), ("big", (1, 3, 240, 160))):
            x = levels_to_input(pattern_levels(shape))
            grid = (shape[2] // 8, shape[3] // 8)
            with torch.no_grad():
                kw = {"interpolate_pos_encoding": True} if interpolate else {}
                res = hf(pixel_values=x, output_attentions=True, **kw)
            assert res.attentions[0].shape[-1] == prefix + grid[0] * grid[1], (name, res.attentions[0].shape)
            with torch.no_grad():
                out[f"hf_{name}/{tag}/logits"] = wrapped(x).numpy()
            out[f"hf_{name}/{tag}/shape"] = np.array(shape)
            out[f"hf_{name}/{tag}/cls_attention"] = torch.stack([a[:, :, 0] for a in res.attentions]).numpy()
            norm = last_block_norm(hf)
            out[f"hf_{name}/{tag}/gradcam_raw"] = raw_cam(wrapped, norm, x, tokens_reshape(prefix, grid), classes)
            print(f"hf_{name:12s} {tag:6s} x {tuple(x.shape)} tokens {res.attentions[0].shape[-1]}")
    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "library_reference.npz", **out)
    print("versions:", ", ".join(out["versions"]))
    for p in sorted(DATA.glob("lib*")) + sorted(DATA.glob("hf_*/*")):
        print(f"{p.relative_to(DATA)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
