"""Streaming map storage: ``.npz`` files written entry by entry, never held in memory.

``token_maps.npz`` always holds each method's raw map at token / feature resolution (a few
hundred bytes per image: enough for the report to redraw every overlay without a model);
``maps.npz`` (``--save-maps``) holds float32 maps at the image's original resolution,
before display normalisation. Keys are ``<method>/<image id>``. Each file is written to
a temporary name and renamed into place when the run completes.

``auditor run`` writes through :class:`PartedMapWriter`: one small npz *part* per batch under
``out/.parts/`` (each renamed into place when its batch is done, before the batch's rows reach
``rows.jsonl``), merged in batch order into the final files at the end. A run killed mid-way
keeps every finished batch's maps, so ``--resume`` ends with maps for every image. Entries
carry a fixed zip timestamp: the same maps give the same bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .io import atomic_path

#: Zip entry timestamp (the zip epoch): identical maps give identical files.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PARTS_DIR = ".parts"
MAP_FILES = ("token_maps", "maps")


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.compress_type = compression
    for attr in ("compress_level", "_compresslevel"):  # ZipFile.open(info, "w") reads the level here
        if attr in zipfile.ZipInfo.__slots__:  # Python >= 3.13, earlier
            setattr(info, attr, 1)
            break
    return info


class _NpzStream:
    def __init__(self, path: Path, compression: int = zipfile.ZIP_DEFLATED):
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._compression = compression
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=compression)

    def add(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(_entry(key + ".npy", self._compression), "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)

    def close(self, ok: bool) -> None:
        self._zip.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class MapWriter:
    """Context manager: ``add(method, image_id, token_map, full_map)`` per image and method."""

    def __init__(self, out: str | Path, *, full: bool):
        self.out, self.full = Path(out), full
        self._token: _NpzStream | None = None
        self._maps: _NpzStream | None = None

    def __enter__(self) -> "MapWriter":
        self._token = _NpzStream(self.out / "token_maps.npz")
        self._maps = _NpzStream(self.out / "maps.npz") if self.full else None
        return self

    def add(self, method: str, image_id: str, token_map: np.ndarray, full_map: np.ndarray | None = None) -> None:
        key = f"{method}/{image_id}"
        self._token.add(key, token_map)
        if self._maps is not None and full_map is not None:
            self._maps.add(key, full_map)

    def __exit__(self, exc_type, exc, tb) -> None:
        for stream in (self._token, self._maps):
            if stream is not None:
                stream.close(exc_type is None)


class _Part(MapWriter):
    """One batch's maps: ``<out>/.parts/<file>.<start>.npz``, renamed into place on success."""

    def __init__(self, folder: Path, start: int, *, full: bool):
        super().__init__(folder, full=full)
        self.start = start

    def __enter__(self) -> "_Part":
        self.out.mkdir(parents=True, exist_ok=True)
        self._token = _NpzStream(self.out / part_name("token_maps", self.start), zipfile.ZIP_STORED)
        self._maps = _NpzStream(self.out / part_name("maps", self.start), zipfile.ZIP_STORED) if self.full else None
        return self


def part_name(kind: str, start: int) -> str:
    return f"{kind}.{start:09d}.npz"


class PartedMapWriter:
    """Maps written per batch (crash safe, resumable) and merged at the end.

    ``with writer.batch(start) as part: part.add(...)`` per batch, ``start`` being the index
    of the batch's first record; :meth:`merge` writes ``token_maps.npz`` (and ``maps.npz``
    when ``full``) from the parts in order, atomically; :meth:`cleanup` removes the parts.
    """

    def __init__(self, out: str | Path, *, full: bool):
        self.out, self.full = Path(out), full
        self.folder = self.out / PARTS_DIR
        self.kinds = MAP_FILES if full else MAP_FILES[:1]

    def batch(self, start: int) -> _Part:
        return _Part(self.folder, start, full=self.full)

    def has(self, start: int) -> bool:
        """True when every map file's part for the batch at ``start`` is complete."""
        return all((self.folder / part_name(k, start)).is_file() for k in self.kinds)

    def discard_from(self, start: int) -> None:
        """Remove parts of batches at ``start`` or later, and unfinished temporary parts."""
        if not self.folder.is_dir():
            return
        pattern = re.compile(r"(?:%s)\.(\d{9})\.npz" % "|".join(MAP_FILES))
        for f in self.folder.iterdir():
            m = pattern.fullmatch(f.name)
            if m is None or int(m.group(1)) >= start:
                f.unlink()

    def merge(self, starts: range | list[int]) -> None:
        """Write the final map files from the parts of ``starts``, in that order."""
        for kind in self.kinds:
            with atomic_path(self.out / f"{kind}.npz") as tmp, zipfile.ZipFile(tmp, "w") as zout:
                for start in starts:
                    with zipfile.ZipFile(self.folder / part_name(kind, start)) as zin:
                        for info in zin.infolist():
                            with zin.open(info) as src, \
                                    zout.open(_entry(info.filename, zipfile.ZIP_DEFLATED), "w", force_zip64=True) as dst:
                                shutil.copyfileobj(src, dst, 1 << 20)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def read_map(path: str | Path, method: str, image_id: str) -> np.ndarray:
    """One map from a ``token_maps.npz`` / ``maps.npz`` file."""
    with np.load(os.fspath(path)) as z:
        return z[f"{method}/{image_id}"]
