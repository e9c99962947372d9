"""Overlay rendering at 1024 x 768: our colormap LUT + blend + encode vs matplotlib imshow + savefig (both PNG)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from auditor.render import encode, overlay, save_png

from ._harness import Config, Row, interleaved, median, ms, ratio

FAMILY = "overlay 1024x768"
H, W = 768, 1024


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """A photo (scikit-image's astronaut, resized to 1024 x 768) and a smooth heat map on it."""
    import skimage.data
    from PIL import Image

    image = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((W, H), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    heat = np.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) / 0.05).astype(np.float32)
    return image, heat


def matplotlib_png(image: np.ndarray, heat: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(W / 100, H / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.imshow(heat, cmap="jet", alpha=0.5)
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def ours_png(image: np.ndarray, heat: np.ndarray, path: Path) -> None:
    save_png(overlay(image, heat), path)  # what `auditor visualize` writes


def run(cfg: Config) -> list[Row]:
    image, heat = inputs()
    tmp = tempfile.TemporaryDirectory(prefix="auditor-bench-")
    png = Path(tmp.name) / "overlay.png"
    fns = {"matplotlib": lambda: matplotlib_png(image, heat), "lut": lambda: overlay(image, heat),
           "png1": lambda: ours_png(image, heat, png), "jpeg": lambda: encode(overlay(image, heat), "JPEG", quality=85)}
    with tmp:
        t = interleaved(fns, repeats=max(cfg.repeats, 3), warmup=cfg.warmup)
    rows = [Row(FAMILY, "matplotlib imshow + savefig (PNG)", ms(median(t["matplotlib"])))]
    for key, name in (("lut", "ours: LUT + blend (no encoding)"), ("png1", "ours: LUT + blend + PNG file (save_png: level 1, Z_RLE)"),
                      ("jpeg", "ours: LUT + blend + JPEG q85")):
        speedup = ratio(t, "matplotlib", key)
        target = key in ("png1", "jpeg")
        rows.append(Row(FAMILY, name, ms(median(t[key])), speedup, "speed-up over matplotlib",
                        ">= 10x" if target else "", (speedup >= 10) if target else None))
    return rows
