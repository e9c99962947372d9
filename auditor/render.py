"""Overlays and patch grids with a colormap lookup table on numpy and PIL (no figures).

Colouring a map is a table lookup (``lut[uint8(map * 255)]``) and blending is one numpy
expression, at the original image size. Default colormap ``jet``: red = high, blue = low,
as the original guide reads its maps; ``cividis`` / ``viridis`` are colour-blind-safe.
"""

from __future__ import annotations

import functools
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .io import atomic_path


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str = "jet") -> np.ndarray:
    """``[256, 3]`` uint8 lookup table of a matplotlib colormap."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap '{name}' (try jet, turbo, viridis, cividis, inferno)") from None
    return np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def colorize(norm_map: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``[H, W]`` values in ``[0, 1]`` -> ``[H, W, 3]`` uint8 colours."""
    idx = np.clip(np.rint(np.asarray(norm_map, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[idx]


def blend(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours``, uint8 ``[H, W, 3]``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = image.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, norm_map: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Heat map ``[H, W]`` in ``[0, 1]`` blended over ``image`` ``[H, W, 3]`` uint8 (same size)."""
    if norm_map.shape != image.shape[:2]:
        raise ValueError(f"map {norm_map.shape} and image {image.shape[:2]} differ in size")
    return blend(image, colorize(norm_map, cmap), alpha)


def patch_edges(n: int, length: int) -> np.ndarray:
    """Pixel boundaries of ``n`` equal patches over ``length`` pixels (``n + 1`` ints)."""
    return np.rint(np.linspace(0, length, n + 1)).astype(int)


def region_pixels(shape: tuple[int, int], region: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A region ``(x0, y0, x1, y1)`` (fractions) as pixel bounds ``(r0, r1, c0, c1)`` of an image
    ``shape = (H, W)``, at least one pixel each way."""
    h, w = shape
    r0, c0 = min(h - 1, round(region[1] * h)), min(w - 1, round(region[0] * w))
    return r0, max(r0 + 1, min(h, round(region[3] * h))), c0, max(c0 + 1, min(w, round(region[2] * w)))


def crop_frame(image: np.ndarray, region: tuple[float, float, float, float] | None) -> np.ndarray:
    """``image`` ``[H, W, 3]`` uint8 with the model's centre crop framed (white and black lines,
    so it shows on any picture); unchanged when ``region`` is None (no crop)."""
    if region is None:
        return image
    out = image.copy()
    _frame(out, *region_pixels(image.shape[:2], region), max(2, min(image.shape[:2]) // 150))
    return out


def patch_grid(image: np.ndarray, token_map: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet",
               line: tuple[int, int, int] = (255, 255, 255), top_k: int = 5,
               region: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """The image cut into the model's patch grid, each patch tinted by its value (the same
    colour map and normalisation as the overlays).

    ``token_map`` ``[h, w]`` in ``[0, 1]`` (one value per patch); thin white lines are the
    patch borders; the ``top_k`` patches (highest values) get a thick black-and-white frame
    (:data:`PATCH_GRID_LEGEND`). ``region``: the centre crop the grid covers (fractions
    ``(x0, y0, x1, y1)``; the rest of the image is left as it is). Returns uint8 ``[H, W, 3]``
    at the image's size.
    """
    if region is not None:
        r0, r1, c0, c1 = region_pixels(image.shape[:2], region)
        out = image.copy()
        out[r0:r1, c0:c1] = patch_grid(image[r0:r1, c0:c1], token_map, alpha=alpha, cmap=cmap, line=line, top_k=top_k)
        return out
    height, width = image.shape[:2]
    gh, gw = token_map.shape
    rows, cols = patch_edges(gh, height), patch_edges(gw, width)
    per_pixel = token_map[np.searchsorted(rows, np.arange(height), side="right") - 1][
        :, np.searchsorted(cols, np.arange(width), side="right") - 1]
    out = overlay(image, per_pixel, alpha=alpha, cmap=cmap)
    lw = max(1, min(height, width) // 300)
    for r in rows:
        out[max(0, min(r, height - lw)):max(0, min(r, height - lw)) + lw] = line
    for c in cols:
        out[:, max(0, min(c, width - lw)):max(0, min(c, width - lw)) + lw] = line
    if top_k > 0:
        frame = max(2, lw * 2)
        for flat in np.argsort(-token_map, axis=None, kind="stable")[:top_k]:
            i, j = divmod(int(flat), gw)
            _frame(out, rows[i], rows[i + 1], cols[j], cols[j + 1], frame)
    return out


def patch_grid_legend(top_k: int, grid: tuple[int, int]) -> str:
    """What :func:`patch_grid`'s lines and frames mean, for the figure's legend."""
    return (f"Each cell is one of the model's {grid[0]}x{grid[1]} patches, tinted by its attention (thin white "
            f"lines: patch borders). Black-and-white frames: the {top_k} patches with the highest attention.")


def _frame(img: np.ndarray, r0: int, r1: int, c0: int, c1: int, width: int) -> None:
    for w, colour in ((width, (0, 0, 0)), (max(1, width // 2), (255, 255, 255))):
        img[r0:r0 + w, c0:c1] = colour
        img[max(r0, r1 - w):r1, c0:c1] = colour
        img[r0:r1, c0:c0 + w] = colour
        img[r0:r1, max(c0, c1 - w):c1] = colour


def side_by_side(images: list[np.ndarray], *, height: int | None = None, gap: int = 8) -> np.ndarray:
    """RGB images ``[H_i, W_i, 3]`` in a row on white, each scaled to ``height`` (default: the first's)."""
    height = height or images[0].shape[0]
    scaled = [np.asarray(Image.fromarray(im).resize((max(1, round(im.shape[1] * height / im.shape[0])), height),
                                                    Image.Resampling.BILINEAR)) if im.shape[0] != height else im
              for im in images]
    out = np.full((height, sum(im.shape[1] for im in scaled) + gap * (len(scaled) - 1), 3), 255, np.uint8)
    x = 0
    for im in scaled:
        out[:, x:x + im.shape[1]] = im
        x += im.shape[1] + gap
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_size(width: int) -> int:
    """Caption font size for a figure ``width`` pixels wide (12 to 28 px)."""
    return int(min(28, max(12, round(width / 34))))


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _text_band(text: str, width: int, size: int, *, bold: bool = False) -> np.ndarray:
    """White band ``[h, width, 3]`` with ``text`` wrapped to the width, dark grey."""
    from PIL import ImageDraw

    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(probe, text, font, width - size) or [""]
    line_h = int(size * 1.3)
    im = Image.new("RGB", (width, line_h * len(lines) + size // 2), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        draw.text((size // 2, size // 4 + i * line_h), line, fill=(20, 20, 20), font=font,
                  stroke_width=1 if bold else 0, stroke_fill=(20, 20, 20))
    return np.asarray(im)


def colour_bar(width: int, cmap: str = "jet", *, size: int | None = None) -> np.ndarray:
    """A horizontal colour bar ``[h, width, 3]``: 'low' | the colormap from 0 to 1 | 'high'."""
    from PIL import ImageDraw

    size = size or text_size(width)
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lw, hw = (int(probe.textlength(t, font=font)) for t in ("low", "high"))
    pad = size // 2
    bar_w = max(16, width - lw - hw - 4 * pad)
    im = Image.new("RGB", (width, int(size * 1.6)), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    top, bar_h = int(size * 0.3), size
    draw.text((pad, top), "low", fill=(20, 20, 20), font=font)
    x0 = lw + 2 * pad
    ramp = colorize(np.broadcast_to(np.linspace(0.0, 1.0, bar_w, dtype=np.float32), (bar_h, bar_w)), cmap)
    im.paste(Image.fromarray(np.ascontiguousarray(ramp)), (x0, top))
    draw.rectangle((x0 - 1, top - 1, x0 + bar_w, top + bar_h), outline=(60, 60, 60))
    draw.text((x0 + bar_w + pad, top), "high", fill=(20, 20, 20), font=font)
    return np.asarray(im)


def figure(image: np.ndarray, title: str, *, cmap: str | None = "jet", legend: str = "") -> np.ndarray:
    """``image`` ``[H, W, 3]`` with a title band above and, below, a colour bar (``cmap``) and a
    legend line. The image's own pixels are unchanged, at rows ``title_height(title, W)`` on."""
    width = image.shape[1]
    size = text_size(width)
    parts = [_text_band(title, width, size, bold=True), image]
    if cmap:
        parts.append(colour_bar(width, cmap, size=size))
    if legend:
        parts.append(_text_band(legend, width, max(11, size - 3)))
    return np.concatenate(parts, axis=0)


def title_height(title: str, width: int) -> int:
    """Height of :func:`figure`'s title band (where the image starts)."""
    return _text_band(title, width, text_size(width), bold=True).shape[0]


def save_png(array: np.ndarray, path: str | Path, *, compress_level: int = 1) -> Path:
    """Write ``[H, W, 3]`` uint8 as PNG atomically (level 1: fast, still lossless).

    zlib's run-length strategy (``Z_RLE``) on PNG's filtered rows encodes a 1024 x 768
    overlay about 1.5x faster than the default strategy at level 1, and smaller
    (``benchmarks/overlay.py``); the pixels are the same.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=compress_level, compress_type=zlib.Z_RLE)
    return path


def encode(array: np.ndarray, fmt: str = "JPEG", *, quality: int = 85, max_side: int | None = None) -> bytes:
    """Encode an image for embedding in a report (JPEG/WebP are 10x smaller than PNG)."""
    im = Image.fromarray(array)
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=quality) if fmt in ("JPEG", "WEBP") else im.save(buf, format=fmt, compress_level=6)
    return buf.getvalue()
