"""Generate the outside-reference values that tests/test_reference_values.py checks.

NOT run by the tests (and not collected by pytest: no ``test_`` prefix). It needs timm and
pytorch-grad-cam, which are NOT project dependencies; run it once in a throwaway venv,
from the repository root::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm grad-cam safetensors numpy
    /tmp/refvenv/bin/python tests/data/make_reference.py

Writes (all small, < 200 KB together):

* ``tests/data/timm_vit_tiny.safetensors`` -- timm ``VisionTransformer`` state_dict
  (vit_small_patch16_224 layout; embed_dim 48, depth 2, 3 heads, 64 x 96 input, 5 classes).
  Weight matrices / kernels (tensors of >= 2 dims except cls_token / pos_embed) are stored as
  ``float8_e4m3fn`` and everything else as ``float16``, to keep the file ~97 KB instead of
  380 KB. The model is first set to exactly those values (float32 holding float8/float16
  numbers), and every reference output below is computed by timm in float32 from them, so
  loading the file into any float32 model reproduces the very same float32 weights.
* ``tests/data/small_cnn.safetensors`` -- :class:`SmallCNN` (defined identically in the test).
* ``tests/data/timm_vit_reference.npz`` -- inputs (as uint8 levels; ``x = (u - 8) / 4`` is
  exact in float32), timm's logits / forward_features / last-block attention, and
  pytorch-grad-cam outputs (raw cam and ``grayscale_cam``) for the ViT and the CNN, plus the
  package versions used.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import timm
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file

DATA = Path(__file__).resolve().parent
VIT_TARGETS = [1, 3]
CNN_TARGETS = [0, 2]
GRID = (4, 6)  # 64 x 96 input, 16 px patches


class SmallCNN(nn.Module):
    """Conv-BN-ReLU x 3 (one stride 2), global average pool, linear: 32 x 32 -> 16 x 16 features, 4 classes."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def input_levels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded uint8 levels 0..15; the model input is ``(u - 8) / 4`` (exact in float32)."""
    return np.random.default_rng(seed).integers(0, 16, size=shape, dtype=np.uint8)


def levels_to_input(u: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((u.astype(np.float32) - 8.0) / 4.0)


def store_dtype(name: str, t: torch.Tensor) -> torch.dtype:
    if t.dtype != torch.float32:
        return t.dtype  # e.g. BatchNorm's num_batches_tracked
    big = t.ndim >= 2 and name not in ("cls_token", "pos_embed")
    return torch.float8_e4m3fn if big else torch.float16


@torch.no_grad()
def randomise(model: nn.Module, seed: int) -> None:
    """Replace every parameter (and BN statistics) with seeded, non-trivial values, then round
    each to its storage dtype so the saved file holds exactly the model's float32 values."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name in ("cls_token", "pos_embed"):
            p.normal_(0.0, 0.5)
        elif p.ndim >= 2:
            fan_in = p[0].numel()
            gain = 1.5 if "qkv" in name else 1.0  # somewhat peaked attention
            p.normal_(0.0, gain / fan_in ** 0.5)
        elif leaf == "weight":  # LayerNorm / BatchNorm scale
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        else:  # biases
            p.normal_(0.0, 0.1)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.normal_(0.0, 0.1)
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand_like(b))
    for name, t in model.state_dict().items():
        if t.dtype == torch.float32:
            t.copy_(t.to(store_dtype(name, t)).float())


def save_weights(model: nn.Module, path: Path) -> None:
    sd = {k: v.detach().to(store_dtype(k, v)).contiguous() for k, v in model.state_dict().items()}
    for k, v in sd.items():  # the stored values are exactly the model's
        assert torch.equal(v.float() if v.is_floating_point() else v, model.state_dict()[k].float()
                           if v.is_floating_point() else model.state_dict()[k]), k
    save_file(sd, str(path))


def token_reshape(t: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT recipe: drop the class token, tokens -> [B, C, h, w]."""
    return t[:, 1:, :].reshape(t.size(0), GRID[0], GRID[1], t.size(2)).permute(0, 3, 1, 2)


def run_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int], reshape=None):
    """grad-cam's output and the raw cam (before its ReLU / min-max / cv2 resize)."""
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    gray = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in targets])
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    weights = grads.mean(axis=(2, 3))  # GradCAM.get_cam_weights
    raw = (weights[:, :, None, None] * acts).sum(axis=1)  # BaseCAM.get_cam_image
    cam.activations_and_grads.release()
    return np.asarray(gray, dtype=np.float32), raw.astype(np.float32)


def main() -> None:
    torch.set_num_threads(1)
    versions = {n: version(p) for n, p in
                [("torch", "torch"), ("timm", "timm"), ("grad-cam", "grad-cam"), ("numpy", "numpy"),
                 ("opencv", "opencv-python-headless"), ("safetensors", "safetensors")]}
    versions["python"] = sys.version.split()[0]
    out: dict[str, np.ndarray] = {}

    # --- ViT (timm) ---------------------------------------------------------------------------
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=5, img_size=(64, 96),
                            embed_dim=48, depth=2, num_heads=3).eval()
    assert vit.global_pool == "token" and isinstance(vit.fc_norm, nn.Identity) and vit.norm.eps == 1e-6
    randomise(vit, seed=0)
    save_weights(vit, DATA / "timm_vit_tiny.safetensors")

    u = input_levels((2, 3, 64, 96), seed=1)
    x = levels_to_input(u)
    out["vit_x_levels"] = u
    with torch.no_grad():
        out["vit_logits"] = vit(x).numpy()  # timm as configured (fused attention where available)
        out["vit_features"] = vit.forward_features(x).numpy()
        # last block's attention probabilities: timm's explicit (non-fused) path, read at attn_drop
        for blk in vit.blocks:
            blk.attn.fused_attn = False
        seen: list[torch.Tensor] = []
        h = vit.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
        logits_explicit = vit(x)
        h.remove()
        out["vit_attn_last"] = seen[0].numpy()
        print("timm fused vs explicit logits: max |diff| =",
              float((logits_explicit - torch.from_numpy(out["vit_logits"])).abs().max()))
        for blk in vit.blocks:  # back to timm's default for Grad-CAM
            blk.attn.fused_attn = timm.layers.use_fused_attn()
    assert out["vit_attn_last"].shape == (2, 3, 25, 25) and out["vit_features"].shape == (2, 25, 48)

    out["vit_gradcam"], out["vit_gradcam_raw"] = run_gradcam(vit, vit.blocks[-1].norm1, x, VIT_TARGETS, token_reshape)
    out["vit_targets"] = np.array(VIT_TARGETS)

    # --- small CNN ----------------------------------------------------------------------------
    cnn = SmallCNN().eval()
    randomise(cnn, seed=2)
    save_weights(cnn, DATA / "small_cnn.safetensors")
    u2 = input_levels((2, 3, 32, 32), seed=3)
    x2 = levels_to_input(u2)
    out["cnn_x_levels"] = u2
    with torch.no_grad():
        out["cnn_logits"] = cnn(x2).numpy()
    out["cnn_gradcam"], out["cnn_gradcam_raw"] = run_gradcam(cnn, cnn.features[-1], x2, CNN_TARGETS)
    out["cnn_targets"] = np.array(CNN_TARGETS)

    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "timm_vit_reference.npz", **out)
    for k, v in out.items():
        print(f"{k:18s} {str(v.dtype):8s} {v.shape}")
    print("versions:", ", ".join(out["versions"]))
    for p in ("timm_vit_tiny.safetensors", "small_cnn.safetensors", "timm_vit_reference.npz"):
        print(f"{p}: {(DATA / p).stat().st_size} bytes")


if __name__ == "__main__":
    main()
