"""Streaming map storage: ``.npz`` files written entry by entry, never held in memory.

``token_maps.npz`` always holds each method's raw map at token / feature resolution (a few
hundred bytes per image: enough for the report to redraw every overlay without a model);
``maps.npz`` (``--save-maps``) holds float32 maps at the image's original resolution,
before display normalisation. Keys are ``<method>/<image id>``. Each file is written to
a temporary name and renamed into place when the run completes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .io import atomic_path


class _NpzStream:
    def __init__(self, path: Path):
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)

    def add(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(key + ".npy", "w", force_zip64=True) as f:
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


def read_map(path: str | Path, method: str, image_id: str) -> np.ndarray:
    """One map from a ``token_maps.npz`` / ``maps.npz`` file."""
    with np.load(os.fspath(path)) as z:
        return z[f"{method}/{image_id}"]
