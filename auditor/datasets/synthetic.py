"""A seeded synthetic localisation data set: shapes on natural textures, with exact boxes
and synthetic human gaze.

Each image is a crop of a scikit-image sample photo (grass, brick, gravel, coffee, ...),
tinted and noised, with one object -- a ``disc``, ``square``, ``triangle`` or ``cross`` in a
random colour, position and scale. The record holds the object's exact bounding box, 12
fixations drawn from a Gaussian around the object (a viewer looks at the object, with
scatter), and a gaze density map (the fixations blurred, ``.npy``).

The **shortcut variant** adds a small class-coloured square in the top-left corner. In
``shortcut="train"`` mode the corner mark carries the label and the object's shape is
random (so a model trained on it can only use the mark); ``shortcut="consistent"`` marks
each image with its true class (the demo's test set, where mark and shape agree);
``shortcut="shuffled"`` marks with a random class.

Everything is a function of ``(seed, index)``: the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disc", "square", "triangle", "cross")
MARK_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48))
_TEXTURES = ("grass", "brick", "gravel", "camera", "coffee", "rocket", "astronaut", "hubble_deep_field",
             "immunohistochemistry", "moon")
SHORTCUT_MODES = (None, "train", "consistent", "shuffled")


@dataclass(frozen=True)
class SyntheticConfig:
    size: int = 64
    min_scale: float = 0.22
    max_scale: float = 0.42
    n_fixations: int = 12
    mark_size: int = 8
    shortcut: str | None = None

    def __post_init__(self) -> None:
        if self.shortcut not in SHORTCUT_MODES:
            raise ValueError(f"shortcut must be one of {SHORTCUT_MODES}, got {self.shortcut!r}")


_texture_cache: dict[str, np.ndarray] = {}


def _texture(name: str) -> np.ndarray:
    if name not in _texture_cache:
        import skimage.data

        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        _texture_cache[name] = img[..., :3]
    return _texture_cache[name]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    tex = _texture(_TEXTURES[rng.integers(len(_TEXTURES))])
    crop = int(rng.integers(size, min(tex.shape[:2]) + 1))
    y, x = (int(rng.integers(0, tex.shape[i] - crop + 1)) for i in (0, 1))
    patch = Image.fromarray(tex[y:y + crop, x:x + crop]).resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(patch, dtype=np.float32)
    a = a * rng.uniform(0.5, 1.0) + rng.uniform(-40, 40, size=3)  # tint and dim
    a += rng.normal(0, 8, a.shape)
    return np.clip(a, 0, 255)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:
        w, h = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + w, y0, x1 - w, y1), fill=colour)
        draw.rectangle((x0, y0 + h, x1, y1 - h), fill=colour)


def generate_sample(seed: int, index: int, cfg: SyntheticConfig = SyntheticConfig()) -> dict:
    """One image ``[size, size, 3]`` uint8 with ``label``, ``box`` ``[x0, y0, x1, y1]``
    (exact, in pixels), ``fixations`` (``[x, y]`` list) and ``gaze`` (float32 map)."""
    rng = np.random.default_rng([seed, index])
    s = cfg.size
    label = int(rng.integers(len(CLASSES)))
    shape = CLASSES[int(rng.integers(len(CLASSES)))] if cfg.shortcut == "train" else CLASSES[label]
    side = int(round(rng.uniform(cfg.min_scale, cfg.max_scale) * s))
    low = cfg.mark_size + 2 if cfg.shortcut else 0  # keep the object clear of the corner mark
    x0, y0 = (int(rng.integers(low, s - side + 1)) for _ in range(2))
    bg = _background(rng, s)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if abs(np.mean(colour) - bg[y0:y0 + side, x0:x0 + side].mean()) < 60:  # keep the object visible
        colour = tuple(255 - c for c in colour) if np.mean(colour) < 128 else tuple(c // 4 for c in colour)
    mask_img = Image.new("L", (s, s), 0)
    _draw(ImageDraw.Draw(mask_img), shape, (x0, y0, x0 + side - 1, y0 + side - 1), 255)
    mask = np.asarray(mask_img) > 0
    img = bg.copy()
    img[mask] = colour
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    if cfg.shortcut:
        mark = {"train": label, "consistent": label, "shuffled": int(rng.integers(len(CLASSES)))}[cfg.shortcut]
        img[1:1 + cfg.mark_size, 1:1 + cfg.mark_size] = MARK_COLOURS[mark]
    cx, cy, sigma = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, side / 4
    fix = np.clip(rng.normal([cx, cy], sigma, size=(cfg.n_fixations, 2)).round(2), 0, s - 0.01)  # inside [0, s)
    return {"image": np.rint(img).astype(np.uint8), "label": label, "box": box,
            "fixations": fix.tolist(), "gaze": _density(fix, s, sigma)}


def _density(fix: np.ndarray, size: int, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    g = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)) for x, y in fix)
    return (g / g.max()).astype(np.float32)


def write_dataset(root: str | Path, n: int, *, seed: int = 0, cfg: SyntheticConfig = SyntheticConfig(),
                  gaze_maps: bool = True) -> Path:
    """Write ``n`` images, gaze maps and ``manifest.jsonl`` (the format of ``auditor run``)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if gaze_maps:
        (root / "gaze").mkdir(exist_ok=True)
    lines = [json.dumps({"classes": list(CLASSES)})]
    for i in range(n):
        smp = generate_sample(seed, i, cfg)
        name = f"{i:05d}_{CLASSES[smp['label']]}"
        Image.fromarray(smp["image"]).save(root / "images" / f"{name}.png", compress_level=1)
        rec = {"image": f"images/{name}.png", "id": name, "label": CLASSES[smp["label"]], "boxes": [smp["box"]],
               "fixations": smp["fixations"]}
        if gaze_maps:
            np.save(root / "gaze" / f"{name}.npy", smp["gaze"])
            rec["gaze"] = f"gaze/{name}.npy"
        lines.append(json.dumps(rec))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def tensors(seed: int, indices: range, cfg: SyntheticConfig = SyntheticConfig()):
    """``(images uint8 [N, S, S, 3], labels int64 [N], boxes [N, 4])`` for training."""
    samples = [generate_sample(seed, i, cfg) for i in indices]
    return (np.stack([s["image"] for s in samples]), np.array([s["label"] for s in samples]),
            np.array([s["box"] for s in samples]))
