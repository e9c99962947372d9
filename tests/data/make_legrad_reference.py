"""Generate the torchcam LeGrad reference maps that tests/test_legrad.py checks.

NOT run by the tests (torchcam imports torchvision, which does not import beside torch 2.13.0).
In the throwaway venv of tests/data/make_attnlrp_reference.py (torch 2.14.1, torchvision 0.29.1,
lxt 2.1 for its ViT builder) plus ``pip install --no-deps torchcam==0.5.0``, from the repository root::

    /tmp/lxtvenv/bin/python tests/data/make_legrad_reference.py

The torchvision ViT of make_attnlrp_reference.py (same float16-exact weights, in the built-in
ViT's layout in ``attnlrp_vit.safetensors``), float64, the same images and targets. torchcam's
``LeGrad(model, blocks)(class_idx=targets, normalized=False)[0]`` for all blocks and for the last
one; writes ``legrad_reference.npz`` with versions.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torchcam.methods import LeGrad

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_attnlrp_reference import build  # noqa: E402

DATA = Path(__file__).resolve().parent


def main() -> None:
    model = build().double()
    ref = np.load(DATA / "attnlrp_reference.npz")
    x, targets = torch.from_numpy(ref["x"]).double(), ref["targets"].tolist()
    layers = list(model.encoder.layers)
    out = {}
    for key, blocks in (("all", layers), ("last1", layers[-1:])):
        with LeGrad(model, blocks) as extractor:
            model(x)
            out[f"{key}_map"] = extractor(class_idx=targets, normalized=False)[0].detach().float().numpy()
    meta = {"dtype": "float64", "torchcam": version("torchcam"), "torch": torch.__version__,
            "torchvision": version("torchvision")}
    np.savez_compressed(DATA / "legrad_reference.npz", meta=np.array(json.dumps(meta)), **out)
    print(json.dumps(meta), {k: (v.shape, float(np.abs(v).max())) for k, v in out.items()})


if __name__ == "__main__":
    main()
