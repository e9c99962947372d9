"""Images for a report: thumbnails made once, overlays redrawn from token maps, JPEG bytes
embedded as ``data:`` URIs or written to a sibling ``assets/`` folder.

Where images go (:class:`AssetSink`): encoded bytes stay in memory while their total is at
most ``INLINE_LIMIT_BYTES`` (8 MiB: about 11 MB of base64 in the HTML, which a browser still
opens in a second); then the report is one self-contained file. Past the limit every image
becomes a file ``assets/<report stem>-NNNNN.jpg`` beside the report and the HTML links to it
relatively (the folder must travel with the report). Either way the page works from
``file://`` with no server and no network.

Overlays are drawn at thumbnail size: the raw token map goes through the method's recorded
:class:`auditor.maps.PostProcess` (ReLU at token resolution, bilinear upsampling straight to
the thumbnail, min-max) and is blended (:func:`auditor.render.overlay`) -- the same function
the audit scored at full size, without ever touching a model. When the model saw a centre crop
(``settings.preprocessing.resize == "crop"``) the map covers the crop, is 0 outside it, and the
crop is framed on the overlay (:func:`auditor.render.crop_frame`).
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .. import maps as maplib
from ..images import load_image
from ..io import write_bytes
from ..render import colormap_lut, crop_frame, encode, overlay, patch_grid

INLINE_LIMIT_BYTES = 8 * 2**20
THUMB_SIDE = 256
JPEG_QUALITY = 80
_MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
BOX_COLOUR = (255, 221, 0)  # yellow with a black edge: visible on any image, colour-blind safe
FIX_COLOUR = (0, 255, 255)


class Asset:
    """One encoded image; ``src`` is a data URI or a relative path, decided when the sink finishes."""

    __slots__ = ("_sink", "name", "ext", "data", "size")

    def __init__(self, sink: "AssetSink", name: str, ext: str, data: bytes):
        self._sink, self.name, self.ext, self.data, self.size = sink, name, ext, data, len(data)

    @property
    def src(self) -> str:
        if self._sink.inline:
            return f"data:{_MIME[self.ext]};base64," + base64.b64encode(self.data).decode("ascii")
        return f"{self._sink.folder.name}/{self.name}"

    def __str__(self) -> str:
        return self.src


class AssetSink:
    """Collects a report's images; inline while small, a folder of files past ``inline_limit``."""

    def __init__(self, report_path: Path, *, inline_limit: int = INLINE_LIMIT_BYTES):
        self.folder = report_path.parent / "assets"
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", report_path.stem)
        self.inline_limit = inline_limit
        self.inline = True
        self.total_bytes = 0
        self.count = 0
        self._assets: list[Asset] = []
        self._lock = threading.Lock()
        self._stale = re.compile(re.escape(self.prefix) + r"-\d{5,}\.(jpg|png|webp)")
        self._clean()

    def add(self, data: bytes, ext: str = "jpg") -> Asset:
        with self._lock:
            asset = Asset(self, f"{self.prefix}-{self.count:05d}.{ext}", ext, data)
            self.count += 1
            self.total_bytes += len(data)
            if self.inline and self.total_bytes > self.inline_limit:
                self.inline = False
                for a in self._assets:
                    self._write(a)
                self._assets.clear()
            if self.inline:
                self._assets.append(asset)
            else:
                self._write(asset)
            return asset

    def image(self, array: np.ndarray) -> Asset:
        return self.add(encode(array, "JPEG", quality=JPEG_QUALITY), "jpg")

    def _write(self, asset: Asset) -> None:
        write_bytes(self.folder / asset.name, asset.data)
        asset.data = b""

    def _clean(self) -> None:
        """Remove this report's files from an earlier rendering (only names it would write)."""
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                if self._stale.fullmatch(p.name):
                    p.unlink()
            if not any(self.folder.iterdir()):
                self.folder.rmdir()


@dataclass
class Picture:
    """An image prepared once: its thumbnail and its original ``(H, W)``."""

    thumb: np.ndarray
    full_shape: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Thumbnail pixels per original pixel, ``(sy, sx)``."""
        return self.thumb.shape[0] / self.full_shape[0], self.thumb.shape[1] / self.full_shape[1]


def load_picture(path: str | Path, max_side: int = THUMB_SIDE) -> Picture:
    """Decode an image (EXIF orientation applied, as the audit saw it) and shrink it once."""
    full = load_image(path)
    im = Image.fromarray(full)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return Picture(np.asarray(im), full.shape[:2])


def annotate(pic: Picture, mask: np.ndarray | None = None, points: np.ndarray | None = None) -> np.ndarray:
    """The thumbnail with the reference drawn: the box / mask outline and fixation points.

    ``mask`` ``[H, W]`` bool at the original size; ``points`` ``[N, 2]`` ``(x, y)`` original pixels.
    """
    out = pic.thumb.copy()
    h, w = out.shape[:2]
    if mask is not None and np.asarray(mask).any():
        small = np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 0
        edge = _edge(small)
        out[_grow(edge)] = 0
        out[edge] = BOX_COLOUR
    if points is not None and len(points):
        im = Image.fromarray(out)
        draw = ImageDraw.Draw(im)
        sy, sx = pic.scale
        r = max(2, min(h, w) // 60)
        for x, y in np.asarray(points, dtype=float)[:, :2]:
            cx, cy = x * sx, y * sy
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=FIX_COLOUR, outline=(0, 0, 0))
        out = np.asarray(im)
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _edge(mask: np.ndarray) -> np.ndarray:
    """The region's outline, 2 px wide on every side, inside the region."""
    return mask & ~_erode(_erode(mask))


def _grow(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def heat_map(pic: Picture, token_map: np.ndarray, post: "str | maplib.PostProcess",
             region: "maplib.Region | None" = None) -> np.ndarray:
    """The array an overlay draws: ``post`` (the method's :class:`auditor.maps.PostProcess` or
    its recorded normalisation) of the raw token map ``[h, w]`` at the thumbnail's size --
    the scored map itself when the thumbnail has the image's size. ``region``: the model's
    centre crop (fractions of the image), outside which the map is 0."""
    return maplib.PostProcess.from_mode(post)(np.asarray(token_map, dtype=np.float32), pic.thumb.shape[:2], region)


def heat_overlay(pic: Picture, token_map: np.ndarray, normalization: "str | maplib.PostProcess", *,
                 cmap: str = "jet", alpha: float = 0.5, style: str = "overlay",
                 region: "maplib.Region | None" = None) -> np.ndarray:
    """A method's raw token map ``[h, w]`` drawn over the thumbnail (``style``: overlay or grid);
    with a centre crop (``region``) the map covers the crop and the crop is framed."""
    if style == "grid":
        tints = maplib.PostProcess.from_mode(normalization).token_map(np.asarray(token_map, dtype=np.float32))
        out = patch_grid(pic.thumb, tints, alpha=alpha, cmap=cmap, top_k=3, region=region)
    else:
        out = overlay(pic.thumb, heat_map(pic, token_map, normalization, region), alpha=alpha, cmap=cmap)
    return crop_frame(out, region)


def colour_scale_css(cmap: str, stops: int = 11) -> str:
    """A CSS ``linear-gradient`` of the colormap (for the legend: low to high)."""
    lut = colormap_lut(cmap)
    cols = [lut[int(round(i * 255 / (stops - 1)))] for i in range(stops)]
    return "linear-gradient(to right, " + ", ".join(f"rgb({r},{g},{b})" for r, g, b in cols) + ")"
