"""Streaming map storage: ``.npz`` files written as the run goes, never held whole in memory.

``token_maps.npz`` always holds each method's raw map at token / feature resolution (a few
hundred bytes per image: enough for the report to redraw every overlay without a model).
They are *packed*: each batch's maps of one method (of one shape) are one ``[n, h, w]``
float32 array ``packed/<method>/<batch start>.<k>.maps`` beside the image ids in that order,
``packed/<method>/<batch start>.<k>.ids`` (a unicode array) -- one zip entry per map would cost
more in zip and ``.npy`` headers than the map itself. ``maps.npz`` (``--save-maps``) holds
float32 maps at the image's original resolution, before display normalisation, one entry per
map, keys ``<method>/<image id>`` (token maps were stored so before packing: :class:`MapFile`
reads both layouts). Each file is written to a temporary name and renamed into place when the
run completes.

``auditor run`` writes through :class:`PartedMapWriter`: one small npz *part* per batch under
``out/.parts/`` (each renamed into place when its batch is done, before the batch's rows reach
``rows.jsonl``), merged in batch order into the final files at the end. A run killed mid-way
keeps every finished batch's maps, so ``--resume`` ends with maps for every image. Entries
carry a fixed zip timestamp: the same maps give the same bytes.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np

from .io import atomic_path

#: Zip entry timestamp (the zip epoch): identical maps give identical files.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PARTS_DIR = ".parts"
MAP_FILES = ("token_maps", "maps")
PACKED = "packed/"  # entry prefix of packed token maps
FLUSH = 1024  # a whole-file MapWriter writes a method's packed array every this many maps


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
        """``array`` as ``key + ".npy"``: float32, or a unicode array as it is (packed ids)."""
        array = np.ascontiguousarray(array, dtype=None if array.dtype.kind == "U" else np.float32)
        with self._zip.open(_entry(key + ".npy", self._compression), "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)

    def close(self, ok: bool) -> None:
        self._zip.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class MapWriter:
    """Context manager: ``add(method, image_id, token_map, full_map)`` per image and method.

    Token maps are packed (see the module docstring): buffered per method and written as
    arrays when the writer closes, or every :data:`FLUSH` maps."""

    def __init__(self, out: str | Path, *, full: bool):
        self.out, self.full = Path(out), full
        self._token: _NpzStream | None = None
        self._maps: _NpzStream | None = None
        self._pending: dict[str, list[tuple[str, np.ndarray]]] = {}
        self._tag, self._flush_at = 0, FLUSH

    def __enter__(self) -> "MapWriter":
        self._token = _NpzStream(self.out / "token_maps.npz")
        self._maps = _NpzStream(self.out / "maps.npz") if self.full else None
        return self

    def add(self, method: str, image_id: str, token_map: np.ndarray, full_map: np.ndarray | None = None) -> None:
        self._pending.setdefault(method, []).append((str(image_id), np.asarray(token_map, dtype=np.float32)))
        if self._maps is not None and full_map is not None:
            self._maps.add(f"{method}/{image_id}", full_map)
        if len(self._pending[method]) >= self._flush_at:
            self._flush()

    def _flush(self) -> None:
        """Write the buffered token maps: per method (in the order first added), one array per shape."""
        for method, items in self._pending.items():
            shapes = list(dict.fromkeys(m.shape for _, m in items))
            for k, shape in enumerate(shapes):
                group = [(i, m) for i, m in items if m.shape == shape]
                name = f"{PACKED}{method}/{self._tag:09d}.{k}"
                self._token.add(name + ".maps", np.stack([m for _, m in group]))
                self._token.add(name + ".ids", np.array([i for i, _ in group], dtype=str))
        self._pending = {}
        self._tag += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._token is not None:
            self._flush()
        for stream in (self._token, self._maps):
            if stream is not None:
                stream.close(exc_type is None)


class _Part(MapWriter):
    """One batch's maps: ``<out>/.parts/<file>.<start>.npz``, renamed into place on success."""

    def __init__(self, folder: Path, start: int, *, full: bool):
        super().__init__(folder, full=full)
        self.start = start
        self._tag, self._flush_at = start, 1 << 62  # one array per method (and shape): the batch's

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


class MapFile:
    """Read-only access to a ``token_maps.npz`` / ``maps.npz``: packed arrays or one entry per map.

    :meth:`get` returns one map (a copy); a missing file has no maps (``available`` False).
    The packed layout's index (image id -> array and position) is read on the first
    :meth:`get`: a few bytes per map, never the maps; the last few arrays read stay cached,
    so reading the maps of a batch in order decompresses each array once.
    """

    CACHE = 8

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None
        self._names = set(self._zip.namelist()) if self._zip else set()
        self._index: dict[str, tuple[list[int], list[str], dict[str, int]]] | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def available(self) -> bool:
        return self._zip is not None

    def _read(self, name: str) -> np.ndarray:
        with self._zip.open(name) as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    def _packed(self) -> dict[str, tuple[list[int], list[str], dict[str, int]]]:
        """Per method: ``(first position of each array, array entry names, id -> position)``."""
        if self._index is None:
            self._index = {}
            count: dict[str, int] = {}  # maps of each method so far
            for name in sorted(n for n in self._names if n.startswith(PACKED) and n.endswith(".ids.npy")):
                method = name[len(PACKED):].rpartition("/")[0]
                starts, entries, ids = self._index.setdefault(method, ([], [], {}))
                first = count.get(method, 0)
                starts.append(first)
                entries.append(name[:-len(".ids.npy")] + ".maps.npy")
                names = self._read(name).tolist()
                for pos, image_id in enumerate(names, start=first):
                    ids.setdefault(image_id, pos)  # an id stored twice: its first map, as before packing
                count[method] = first + len(names)
        return self._index

    def get(self, method: str, image_id: str) -> np.ndarray | None:
        """The map of ``image_id`` for ``method``, or None when the file has none."""
        if self._zip is None:
            return None
        name = f"{method}/{image_id}.npy"
        if name in self._names:
            return self._read(name)
        starts, entries, ids = self._packed().get(method, ((), (), {}))
        pos = ids.get(str(image_id))
        if pos is None:
            return None
        k = bisect.bisect_right(starts, pos) - 1
        array = self._cache.get(entries[k])
        if array is None:
            array = self._cache[entries[k]] = self._read(entries[k])
            while len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(entries[k])
        return array[pos - starts[k]].copy()

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every map as ``("<method>/<image id>", map)``: one-entry maps in file order, then packed ones
        method by method, in the order written."""
        if self._zip is None:
            return
        for name in self._zip.namelist():
            if not name.startswith(PACKED) and name.endswith(".npy"):
                yield name[:-len(".npy")], self._read(name)
        for method, (_, entries, _) in self._packed().items():
            for entry in entries:
                ids = self._read(entry[:-len(".maps.npy")] + ".ids.npy").tolist()
                yield from ((f"{method}/{i}", m) for i, m in zip(ids, self._read(entry)))

    def close(self) -> None:
        if self._zip:
            self._zip.close()
        self._cache.clear()

    def __enter__(self) -> "MapFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    """All maps of a ``token_maps.npz`` / ``maps.npz`` file (either layout), keys ``<method>/<image id>``.
    Holds every map in memory: for tests and small runs; :class:`MapFile` reads one at a time."""
    with MapFile(path) as f:
        return dict(f.items())


def read_map(path: str | Path, method: str, image_id: str) -> np.ndarray:
    """One map from a ``token_maps.npz`` / ``maps.npz`` file; KeyError when it holds none."""
    with MapFile(path) as f:
        found = f.get(method, image_id)
    if found is None:
        raise KeyError(f"{path} holds no {method} map of image {image_id!r}")
    return found
