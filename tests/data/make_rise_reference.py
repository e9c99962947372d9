"""Generate the RISE reference maps that tests/test_rise.py checks.

NOT run by the tests. It needs the authors' code (github.com/eclique/RISE, ``explanations.py`` at
commit d91ea006d4bb9b7990347fe97086bdc0f5c1fe10), scikit-image and timm (not project
dependencies): run it once in a throwaway venv from the repository root::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm scikit-image tqdm safetensors numpy
    git clone https://github.com/eclique/RISE /tmp/RISE   # explanations.py at the commit above
    /tmp/refvenv/bin/python tests/data/make_rise_reference.py /tmp/RISE

Same models and inputs as tests/data/make_attr_reference.py (timm ViT 64 x 96 and SmallCNN
32 x 32, weights from tests/data/*.safetensors). For each config, ``np.random.seed(seed)`` and the
authors' ``RISE.generate_masks(N, s, p1)`` draw the masks; the same seed replays their draws
(``np.random.rand(N, s, s) < p1``, then per mask ``randint(0, cell_h)``, ``randint(0, cell_w)``) to
store the grids and crop offsets, which the test feeds to our ``rise``. The authors'
``RISE.forward`` (one image at a time) gives every class's saliency ``sum_i score_i M_i / N / p1``;
the score is the model followed by a softmax (their notebooks: ``nn.Sequential(model,
nn.Softmax(dim=1))``) for ``score='probability'``, the bare model for ``score='raw'``. Stored:
grids, offsets, each image's map for its target, the first 4 masks, settings and versions.
Their code calls ``.cuda()``: on this CPU machine it is made a no-op.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import timm
from safetensors.torch import load_file

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))
from make_reference import SmallCNN, input_levels, levels_to_input  # noqa: E402

CONFIGS = {
    "cnn_prob": {"model": "cnn", "n_masks": 40, "cells": 4, "p": 0.5, "score": "probability", "seed": 3},
    "cnn_raw": {"model": "cnn", "n_masks": 30, "cells": 5, "p": 0.3, "score": "raw", "seed": 4},
    "vit_prob": {"model": "vit", "n_masks": 40, "cells": 5, "p": 0.5, "score": "probability", "seed": 5},
}


def replay(cfg: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The grids and offsets ``generate_masks`` drew after ``np.random.seed(cfg['seed'])``."""
    n, s, p1 = cfg["n_masks"], cfg["cells"], cfg["p"]
    cell = np.ceil(np.array(size) / s)
    np.random.seed(cfg["seed"])
    grid = np.random.rand(n, s, s) < p1
    shifts = np.array([[np.random.randint(0, cell[0]), np.random.randint(0, cell[1])] for _ in range(n)])
    return grid, shifts


def main(rise_dir: str) -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # their code hard-codes .cuda()
    sys.path.insert(0, rise_dir)
    from explanations import RISE  # noqa: E402

    torch.set_num_threads(1)
    versions = {n: version(n) for n in ("torch", "timm", "scikit-image", "numpy", "safetensors")}
    versions["python"] = sys.version.split()[0]
    versions["eclique/RISE"] = subprocess.run(["git", "-C", rise_dir, "rev-parse", "HEAD"], capture_output=True,
                                              text=True).stdout.strip() or "d91ea006d4bb9b7990347fe97086bdc0f5c1fe10"
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=5, img_size=(64, 96),
                            embed_dim=48, depth=2, num_heads=3).eval()
    vit.load_state_dict({k: v.float() for k, v in load_file(str(DATA / "timm_vit_tiny.safetensors")).items()})
    cnn = SmallCNN().eval()
    cnn.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in load_file(str(DATA / "small_cnn.safetensors")).items()})
    models = {"vit": (vit, (2, 3, 64, 96), 21, [1, 3]), "cnn": (cnn, (2, 3, 32, 32), 22, [0, 2])}
    out: dict[str, np.ndarray] = {}
    for prefix, (model, shape, seed, targets) in models.items():
        u = input_levels(shape, seed=seed)
        out[f"{prefix}_x_levels"], out[f"{prefix}_targets"] = u, np.array(targets)
    for name, cfg in CONFIGS.items():
        model, shape, _, targets = models[cfg["model"]]
        size = shape[-2:]
        black_box = nn.Sequential(model, nn.Softmax(dim=1)) if cfg["score"] == "probability" else model
        explainer = RISE(black_box, size, gpu_batch=16)
        np.random.seed(cfg["seed"])
        explainer.generate_masks(N=cfg["n_masks"], s=cfg["cells"], p1=cfg["p"], savepath="/tmp/rise_masks.npy")
        grid, shifts = replay(cfg, size)
        x = levels_to_input(out[f"{cfg['model']}_x_levels"])
        with torch.no_grad():
            maps = [explainer(x[i:i + 1])[t].numpy() for i, t in enumerate(targets)]
        out[f"{name}/grid"], out[f"{name}/shifts"] = grid, shifts.astype(np.int64)
        out[f"{name}/maps"] = np.stack(maps).astype(np.float32)
        out[f"{name}/masks"] = explainer.masks[:4, 0].numpy().astype(np.float32)
    out["configs"] = np.array(json.dumps(CONFIGS))
    out["versions"] = np.array([f"{k}=={v}" for k, v in versions.items()])
    np.savez_compressed(DATA / "rise_reference.npz", **out)
    for k, v in out.items():
        print(f"{k:24s} {str(v.dtype):8s} {v.shape} " + (f"max|.|={np.abs(v).max():.4g}" if v.dtype.kind == "f" else ""))
    print("versions:", ", ".join(out["versions"]))
    print("size:", (DATA / "rise_reference.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1])
