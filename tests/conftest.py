"""Shared fixtures: tiny models, images written from scikit-image samples, trained toys."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from PIL import Image

from auditor.models import create_model

TINY = {"embed_dim": 48, "depth": 2, "num_heads": 3}


def tiny_vit(**kwargs) -> nn.Module:
    """A random 2-block ViT; ``class_names`` names its head (audits map data-set classes by name)."""
    torch.manual_seed(kwargs.pop("seed", 0))
    names = kwargs.pop("class_names", None)
    model = create_model("vit_small", **{**TINY, "image_size": 32, "patch_size": 8, **kwargs}).eval()
    if names is not None:
        model.class_names = list(names)
    return model


@pytest.fixture
def chelsea_png(tmp_path):
    """skimage's cat photo, 451 x 300 (non-square), as a PNG file."""
    import skimage.data

    path = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


def colour_vit() -> nn.Module:
    """A hand-built 1-block ViT (32 px, patch 8, width 4) that classifies by colour.

    Patch tokens are the patch's mean R, G, B (channel 3 is 0); attention is uniform (q = k = 0);
    values, projection and head copy channels, the MLP adds nothing. Logit k therefore
    grows with the amount of colour k in the image, and the evidence for "red" is exactly
    where the red pixels are: Grad-CAM must peak there.
    """
    model = create_model("vit_small", embed_dim=4, depth=1, num_heads=1, image_size=32, patch_size=8, num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for c in range(3):
            model.patch_embed.proj.weight[c, c] = 1.0 / 64
        model.blocks[0].attn.qkv.weight[8:12] = torch.eye(4)  # v = x, q = k = 0
        model.blocks[0].attn.proj.weight.copy_(torch.eye(4))
        for ln in (model.blocks[0].norm1, model.blocks[0].norm2, model.norm):
            ln.weight.fill_(1.0)
        model.head.weight[:, :3] = torch.eye(3)
    model.class_names = ["red", "green", "blue"]  # logit k is the amount of colour k
    return model.eval()


def red_square_images(n: int, size: int = 32, side: int = 8, seed: int = 0):
    """Grey noise images with one red square each, aligned to the 8 px patch grid; returns ``[n, 3, size, size]`` and
    each square's ``(row0, col0)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g).repeat(1, 3, 1, 1) * 0.5
    corners = []
    for i in range(n):
        r0, c0 = (int(v) * side for v in torch.randint(0, size // side, (2,), generator=g))  # on the patch grid
        x[i, :, r0:r0 + side, c0:c0 + side] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
        corners.append((r0, c0))
    return x, corners


def same_results(a, b) -> None:
    """Two audits (:class:`~auditor.results.AuditResult`) agree bit for bit: results.json but its
    timing and the engine that ran it, every row's values, token_maps.npz."""
    def strip(d):
        return {**{k: v for k, v in d.items() if k not in ("timing", "rows")},
                "settings": {k: v for k, v in d["settings"].items() if k != "engine"}}

    assert json.dumps(strip(a.data), sort_keys=True) == json.dumps(strip(b.data), sort_keys=True)
    ra, rb = list(a.rows), list(b.rows)
    assert [r["id"] for r in ra] == [r["id"] for r in rb] and [r["error"] for r in ra] == [r["error"] for r in rb]
    for x, y in zip(ra, rb):
        assert x["metrics"].keys() == y["metrics"].keys() and x["prediction"] == y["prediction"]
        for m in x["metrics"]:
            for k, v in x["metrics"][m].items():
                assert v == y["metrics"][m][k], (x["id"], m, k)  # identical, not close
    assert (a.out / "token_maps.npz").read_bytes() == (b.out / "token_maps.npz").read_bytes()
