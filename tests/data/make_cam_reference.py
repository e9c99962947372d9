"""Generate the pytorch-grad-cam reference maps that tests/test_cam_family.py checks.

NOT run by the tests. It needs timm and pytorch-grad-cam (not project dependencies): run it
once in a throwaway venv from the repository root::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm grad-cam==1.5.7 safetensors numpy
    /tmp/refvenv/bin/python tests/data/make_cam_reference.py

It reuses the weights tests/data/make_reference.py saved (``timm_vit_tiny.safetensors``: timm
ViT, embed_dim 48, depth 2, 3 heads, 64 x 96 input; ``small_cnn.safetensors``: ``SmallCNN``)
and writes ``tests/data/cam_family_reference.npz``: inputs (uint8 levels, ``x = (u - 8) / 4``),
targets, and each method's RAW cam -- grad-cam's ``get_cam_image`` before its ReLU, resize and
min-max -- for the ViT at ``blocks[-1].norm1`` (reshape transform: drop the class token,
tokens -> 4 x 6 grid) and the CNN at its last feature map (``features``) and an inner layer
(``features.4``, a BatchNorm output at 16 x 16 where the gradients vary over space), and a tiny
EfficientNet-Lite built from the project's own model code (weights saved here to
``tiny_effnet.safetensors``, seeded and rounded as make_reference.py does) at its last feature
map (``_head_act``) and an inner block's projection BatchNorm (``_blocks.1._bn2``), plus the
package versions.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

import timm
from pytorch_grad_cam import (AblationCAM, EigenCAM, EigenGradCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM,
                              ScoreCAM, XGradCAM)
from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import (GRID, SmallCNN, input_levels, levels_to_input, randomise, save_weights,  # noqa: E402
                            token_reshape)

ROOT = Path(__file__).resolve().parents[2]
#: a tiny EfficientNet-Lite (the project's own code, auditor/models/efficientnet_lite.py, run here
#: without the package): depthwise convs, TF "SAME" padding, ReLU6, a residual; 64 px -> 8 x 8
TINY_EFFNET = {"stages": ((1, 3, 1, 8, 1), (6, 3, 2, 12, 2), (6, 5, 2, 16, 1)), "num_classes": 4,
               "stem_channels": 8, "head_channels": 24}


def project_efficientnet():
    """``EfficientNetLite`` from the project's source file, its two package imports stubbed."""
    src = (ROOT / "auditor" / "models" / "efficientnet_lite.py").read_text()
    src = src.replace("from ..errors import UsageError", "UsageError = ValueError")
    src = src.replace("from ._registry import register_model", "register_model = lambda f: f")
    namespace: dict = {"__name__": "efficientnet_lite_copy"}
    exec(compile(src, "efficientnet_lite.py", "exec"), namespace)
    return namespace["EfficientNetLite"]

DATA = Path(__file__).resolve().parent
METHODS = {"gradcam": GradCAM, "hirescam": HiResCAM, "gradcam_plusplus": GradCAMPlusPlus, "xgradcam": XGradCAM,
           "layercam": LayerCAM, "eigencam": EigenCAM, "eigengradcam": EigenGradCAM, "scorecam": ScoreCAM,
           "ablationcam": AblationCAM}
VIT_TARGETS = [1, 3]
CNN_TARGETS = [0, 2]


def raw_cam(cls, model, layer, x, targets, reshape=None, vit=False) -> np.ndarray:
    """grad-cam's own forward/backward, then its ``get_cam_image`` on the recorded tensors (raw)."""
    kwargs = {"reshape_transform": reshape}
    if cls is AblationCAM:
        kwargs["ablation_layer"] = AblationLayerVit() if vit else AblationLayer()
    cam = cls(model=model, target_layers=[layer], **kwargs)
    if cls is ScoreCAM:
        cam.batch_size = 16
    tgt = [ClassifierOutputTarget(k) for k in targets]
    cam(input_tensor=x, targets=tgt)
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
    raw = cam.get_cam_image(x, layer, tgt, acts, grads, eigen_smooth=False)
    cam.activations_and_grads.release()
    return np.asarray(raw, dtype=np.float32)


def main() -> None:
    torch.set_num_threads(1)
    versions = {n: version(n) for n in ("torch", "timm", "grad-cam", "numpy", "safetensors")}
    versions["python"] = sys.version.split()[0]
    out: dict[str, np.ndarray] = {}

    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=5, img_size=(64, 96),
                            embed_dim=48, depth=2, num_heads=3).eval()
    vit.load_state_dict({k: v.float() for k, v in load_file(str(DATA / "timm_vit_tiny.safetensors")).items()})
    u = input_levels((2, 3, 64, 96), seed=11)
    out["vit_x_levels"], out["vit_targets"] = u, np.array(VIT_TARGETS)
    x = levels_to_input(u)
    for name, cls in METHODS.items():
        out[f"vit/{name}"] = raw_cam(cls, vit, vit.blocks[-1].norm1, x, VIT_TARGETS, token_reshape, vit=True)

    cnn = SmallCNN().eval()
    cnn.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in load_file(str(DATA / "small_cnn.safetensors")).items()})
    u2 = input_levels((2, 3, 32, 32), seed=12)
    out["cnn_x_levels"], out["cnn_targets"] = u2, np.array(CNN_TARGETS)
    x2 = levels_to_input(u2)
    for layer_name, layer in (("features", cnn.features), ("features.4", cnn.features[4])):
        for name, cls in METHODS.items():
            out[f"cnn/{layer_name}/{name}"] = raw_cam(cls, cnn, layer, x2, CNN_TARGETS)

    effnet = project_efficientnet()(**TINY_EFFNET).eval()
    randomise(effnet, seed=13)
    save_weights(effnet, DATA / "tiny_effnet.safetensors")
    u3 = input_levels((2, 3, 64, 64), seed=14)
    out["effnet_x_levels"], out["effnet_targets"] = u3, np.array(CNN_TARGETS)
    x3 = levels_to_input(u3)
    for layer_name in ("_head_act", "_blocks.1._bn2"):
        layer = dict(effnet.named_modules())[layer_name]
        for name, cls in METHODS.items():
            out[f"effnet/{layer_name}/{name}"] = raw_cam(cls, effnet, layer, x3, CNN_TARGETS)

    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "cam_family_reference.npz", **out)
    for k, v in out.items():
        print(f"{k:34s} {str(v.dtype):8s} {v.shape} max|.|={np.abs(v).max() if v.dtype.kind == 'f' else ''}")
    print("versions:", ", ".join(out["versions"]), "grid", GRID)
    print("size:", (DATA / "cam_family_reference.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
