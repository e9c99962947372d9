"""Generate the Captum reference attributions that tests/test_attribution_methods.py checks.

NOT run by the tests. It needs timm, torchvision and captum (not project dependencies): run it
once in a throwaway venv from the repository root::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm captum==0.9.0 safetensors numpy
    /tmp/refvenv/bin/python tests/data/make_attr_reference.py

Same models as tests/data/make_cam_reference.py (timm ViT 64 x 96 and SmallCNN 32 x 32, weights
from tests/data/*.safetensors). Writes ``tests/data/attr_reference.npz``: inputs, targets, and
Captum's attributions (per channel) for integrated gradients (with convergence delta),
SmoothGrad (``NoiseTunnel(Saliency)``, seeded with ``torch.manual_seed``) and occlusion, under
the settings listed in ``CONFIGS`` (stored as JSON in the npz; the ViT only ``VIT_CONFIGS``), plus
versions. The blur baseline
is torchvision's ``gaussian_blur`` (kernel ``2 ceil(3 sigma) + 1``, reflect padding).
"""

from __future__ import annotations

import json
import math
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

import timm
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from safetensors.torch import load_file
from torchvision.transforms.functional import gaussian_blur

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import SmallCNN, input_levels, levels_to_input  # noqa: E402

DATA = Path(__file__).resolve().parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONFIGS = {
    "ig_zero_gl": {"method": "integrated_gradients", "baseline": "zero", "n_steps": 20, "rule": "gausslegendre"},
    "ig_black_trap": {"method": "integrated_gradients", "baseline": "black", "n_steps": 8, "rule": "riemann_trapezoid"},
    "ig_blur_right": {"method": "integrated_gradients", "baseline": "blur", "n_steps": 8, "rule": "riemann_right",
                      "blur_sigma": 2.0},
    "ig_noise_left": {"method": "integrated_gradients", "baseline": "noise", "n_steps": 6, "rule": "riemann_left",
                      "noise_stdev": 0.5, "seed": 5},
    "ig_zero_mid": {"method": "integrated_gradients", "baseline": "zero", "n_steps": 7, "rule": "riemann_middle"},
    "sg_abs": {"method": "smoothgrad", "n_samples": 6, "stdev": 0.3, "squared": False, "seed": 7},
    "sg_sq": {"method": "smoothgrad", "n_samples": 5, "stdev": 0.2, "squared": True, "seed": 8},
    "occ_a": {"method": "occlusion", "window": 16, "stride": 8, "baseline": 0.0},
    "occ_b": {"method": "occlusion", "window": 6, "stride": 5, "baseline": 0.5},
}
#: the ViT's attributions are 6x the CNN's in size: a subset keeps the file under 1 MB
VIT_CONFIGS = ("ig_zero_gl", "sg_abs", "occ_a")


def baseline_tensor(cfg: dict, x: torch.Tensor) -> torch.Tensor:
    if cfg["baseline"] == "zero":
        return torch.zeros_like(x)
    if cfg["baseline"] == "black":
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((0 - mean) / std).expand_as(x).clone()
    if cfg["baseline"] == "blur":
        s = cfg["blur_sigma"]
        return gaussian_blur(x, kernel_size=[2 * math.ceil(3 * s) + 1] * 2, sigma=[s, s])
    gen = torch.Generator().manual_seed(cfg["seed"])
    return x + torch.randn(x.shape, generator=gen) * cfg["noise_stdev"]


def run(cfg: dict, model, x: torch.Tensor, targets: list[int]) -> dict[str, np.ndarray]:
    if cfg["method"] == "integrated_gradients":
        base = baseline_tensor(cfg, x)
        attr, delta = IntegratedGradients(model).attribute(x, baselines=base, target=targets, n_steps=cfg["n_steps"],
                                                           method=cfg["rule"], return_convergence_delta=True)
        return {"attr": attr.detach().numpy(), "delta": delta.detach().numpy()}
    if cfg["method"] == "smoothgrad":
        torch.manual_seed(cfg["seed"])
        attr = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad_sq" if cfg["squared"] else "smoothgrad",
                                                      nt_samples=cfg["n_samples"], stdevs=cfg["stdev"], target=targets)
        return {"attr": attr.detach().numpy()}
    w, s = cfg["window"], cfg["stride"]
    attr = Occlusion(model).attribute(x, sliding_window_shapes=(3, w, w), strides=(3, s, s),
                                      baselines=cfg["baseline"], target=targets)
    return {"attr": attr.detach().numpy()}


def main() -> None:
    torch.set_num_threads(1)
    versions = {n: version(n) for n in ("torch", "torchvision", "timm", "captum", "numpy", "safetensors")}
    versions["python"] = sys.version.split()[0]
    out: dict[str, np.ndarray] = {}
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=5, img_size=(64, 96),
                            embed_dim=48, depth=2, num_heads=3).eval()
    vit.load_state_dict({k: v.float() for k, v in load_file(str(DATA / "timm_vit_tiny.safetensors")).items()})
    cnn = SmallCNN().eval()
    cnn.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in load_file(str(DATA / "small_cnn.safetensors")).items()})
    models = {"vit": (vit, (2, 3, 64, 96), 21, [1, 3]), "cnn": (cnn, (2, 3, 32, 32), 22, [0, 2])}
    for prefix, (model, shape, seed, targets) in models.items():
        u = input_levels(shape, seed=seed)
        out[f"{prefix}_x_levels"], out[f"{prefix}_targets"] = u, np.array(targets)
        x = levels_to_input(u)
        for name, cfg in CONFIGS.items():
            if prefix == "vit" and name not in VIT_CONFIGS:
                continue
            for key, value in run(cfg, model, x, targets).items():
                out[f"{prefix}/{name}/{key}"] = value
    out["configs"] = np.array(json.dumps(CONFIGS))
    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "attr_reference.npz", **out)
    for k, v in out.items():
        print(f"{k:34s} {str(v.dtype):8s} {v.shape} " + (f"max|.|={np.abs(v).max():.4g}" if v.dtype.kind == "f" else ""))
    print("versions:", ", ".join(out["versions"]))
    print("size:", (DATA / "attr_reference.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
