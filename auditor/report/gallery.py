"""The per-image gallery: for each image, the original with its reference drawn and one
overlay per (run, method), redrawn from ``token_maps.npz`` -- never from a model.

Images are decoded, shrunk and encoded in a small thread pool (PIL and numpy release the
GIL), in chunks so memory stays bounded; assets are added to the sink in row order, so
file names and the HTML are deterministic.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .. import maps as maplib
from ..errors import AuditorError
from ..preprocess import Preprocess
from ..render import encode
from ..savers import MapFile as TokenMaps
from .assets import JPEG_QUALITY, AssetSink, Picture, annotate, heat_overlay, load_picture
from .common import resolve_image

CHUNK = 32


@dataclass
class Side:
    """One run as the gallery draws it."""

    label: str
    out: Path
    methods: list[str]
    normalization: dict[str, str]
    preprocess: Preprocess | None = None  # the run's preprocessing; a centre crop places its maps
    maps: TokenMaps = field(init=False)

    def __post_init__(self) -> None:
        self.maps = TokenMaps(self.out / "token_maps.npz")


def side_of(result: Any, label: str = "") -> Side:
    from .common import methods_of

    data = result.data
    methods = methods_of(data)
    norm = {m: str((data["settings"].get("methods") or {}).get(m, {}).get("normalization", "minmax")) for m in methods}
    return Side(label, result.out, methods, norm, Preprocess.from_dict(data["settings"].get("preprocessing")))


class References:
    """Boxes / masks and fixations per image id, read from the audited data set when it is still there.

    ``settings``: the run's results settings; the mask drawn is the one scored (its
    ``mask_classes``; results written before that setting existed scored every box: ``"any"``).
    ``rows``: the rows that will be drawn; from a JSONL manifest with a ``classes`` header only
    their lines are parsed (:func:`_manifest_lines`), so a 50,000-line manifest costs the
    report a pass over its text, not 50,000 records in memory.
    """

    def __init__(self, settings: dict[str, Any], rows: Sequence[Mapping[str, Any]] | None = None):
        data_path = settings.get("data")
        self.mask_classes = settings.get("mask_classes", "any")
        self.records: dict[str, Any] = {}
        self.note = ""
        if not data_path:
            self.note = "the data set is not recorded: references are not drawn"
            return
        try:
            from ..data import load_dataset

            ds = _manifest_lines(Path(data_path), rows) or load_dataset(data_path, allow_outside_root=True)
            wanted = None if rows is None else {str(i) for r in rows
                                                for i in (r.get("record_id", r.get("id")), *(r.get("support") or ()))}
            # the drawn rows' records and their few-shot support images only
            self.records = {r.id: r for r in ds.records if wanted is None or r.id in wanted}
        except (AuditorError, OSError) as e:
            self.note = f"references are not drawn: {e}"

    def of(self, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        record = self.records.get(image_id)
        if record is None:
            return None, None
        from ..data import load_annotations

        try:
            ann = load_annotations(record, shape, mask_classes=self.mask_classes)
        except (AuditorError, OSError, ValueError):
            return None, None
        return getattr(ann, "mask", None), _points(getattr(ann, "fixations", None), shape)


def _manifest_lines(path: Path, rows: Sequence[Mapping[str, Any]] | None) -> Any:
    """The records of ``rows`` alone, parsed from their lines of a ``.jsonl`` manifest (each row's
    ``source`` is ``<manifest name>:<line>``), or None when that does not apply: another kind of
    data set, no ``classes`` header (labels would be indexed by the subset's classes), rows
    without a line, or few-shot rows (their support images are other records)."""
    if rows is None or path.suffix.lower() != ".jsonl" or not path.is_file():
        return None
    wanted = set()
    for r in rows:
        name, _, line = str(r.get("source") or "").rpartition(":")
        if name != path.name or not line.isdigit() or r.get("support"):
            return None
        wanted.add(int(line))
    import json

    from ..data.manifest import parse_jsonl

    kept = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if n == 1:
                try:
                    head = json.loads(line)
                except ValueError:
                    return None
                if not (isinstance(head, dict) and set(head) == {"classes"}):
                    return None
                kept.append(line)
            elif n in wanted:
                kept.append(line)
    return parse_jsonl(kept, root=path.parent, name=path.name, allow_outside_root=True)


def _points(fix: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """Fixations as ``[N, 2]`` ``(x, y)``: from points, or from a fixation map ``[H, W]``."""
    if fix is None:
        return None
    a = np.asarray(fix)
    if a.ndim == 2 and a.shape == tuple(shape) and a.shape[1] != 2:
        return np.argwhere(a > 0)[:, ::-1].astype(float)
    if a.ndim == 2 and a.shape[1] >= 2:
        return a[:, :2].astype(float)
    return None


@dataclass
class Job:
    """What one card needs: the image, and the maps to draw ``[(side label, method, norm, map)]``."""

    image: Path | None
    image_id: str
    record_id: str  # the data set's id (an episode's row id is ep<k>/<record id>)
    maps: list[tuple[str, str, str, np.ndarray | None]]
    crops: list[Preprocess | None] = field(default_factory=list)  # each map's side's preprocessing


def _draw(job: Job, refs: References, cmap: str, style: str) -> tuple[bytes | None, list[bytes | None], str]:
    if job.image is None:
        return None, [None] * len(job.maps), "image file not found"
    try:
        pic = load_picture(job.image)
    except AuditorError as e:
        return None, [None] * len(job.maps), str(e)
    mask, points = refs.of(job.record_id, pic.full_shape)
    original = encode(annotate(pic, mask, points), "JPEG", quality=JPEG_QUALITY)
    panels = []
    for (_, _, norm, token_map), pre in zip(job.maps, job.crops or [None] * len(job.maps)):
        # a constant / non-finite map has nothing to show (normalising would magnify rounding noise)
        ok = token_map is not None and maplib.map_problem(token_map, norm) is None
        region = pre.region(pic.full_shape) if pre is not None else None
        # the reference box / mask outline on every overlay too, so a reader judges each map against it
        panels.append(encode(annotate(Picture(heat_overlay(pic, token_map, norm, cmap=cmap, style=style, region=region),
                                              pic.full_shape), mask), "JPEG", quality=JPEG_QUALITY) if ok else None)
    return original, panels, ""


def draw_cards(rows: Sequence[Mapping[str, Any]], sides: Sequence[Side], sink: AssetSink, *, refs: References,
               base: Path, cmap: str = "jet", style: str = "overlay",
               map_note: Callable[[str, str, Mapping[str, Any]], str] | None = None) -> Iterator[dict[str, Any]]:
    """One ``{original, panels}`` dict per row (same order): ``original`` / ``panels[i].img`` are assets or None."""
    workers = max(1, min(4, os.cpu_count() or 1))
    methods = list(dict.fromkeys(m for s in sides for m in s.methods))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            jobs = [Job(resolve_image(r.get("image"), base), str(r["id"]), str(r.get("record_id", r["id"])),
                        [(s.label, m, s.normalization[m], s.maps.get(m, str(r["id"]))) for m in methods for s in sides
                         if m in s.methods],  # A and B side by side per method
                        [s.preprocess for m in methods for s in sides if m in s.methods])
                    for r in chunk]
            for row, job, (orig, panels, problem) in zip(chunk, jobs, pool.map(lambda j: _draw(j, refs, cmap, style), jobs)):
                yield _card_images(row, job, orig, panels, problem, sink, map_note)


def _card_images(row, job: Job, orig, panels, problem: str, sink: AssetSink, map_note) -> dict[str, Any]:
    rid = str(row["id"])
    out_panels = []
    for (label, method, norm, token_map), data in zip(job.maps, panels):
        title = f"{label}: {method}" if label else method
        note = problem or (map_note(label, method, row) if map_note else "") or (
            "no map saved" if token_map is None else maplib.map_problem(token_map, norm) or "")
        out_panels.append({"title": title, "img": sink.add(data) if data else None, "note": note,
                           "alt": f"{title} attention overlay on image {rid}"})
    return {"original": sink.add(orig) if orig else None, "problem": problem, "panels": out_panels,
            "alt": f"image {rid} with its reference box and fixations"}
