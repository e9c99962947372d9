"""Find the data folders that ship with the package (``templates/``, ``models/``).

A wheel carries them inside the package as ``auditor/_templates`` and ``auditor/_models``
(hatchling ``force-include``); a source checkout or editable install has them at the
repository's top level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """``"templates"`` or ``"models"`` -> the folder that holds them."""
    for candidate in (_PKG / f"_{name}", _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"attention-auditor's '{name}' folder is missing from this installation")


def bundled_models() -> list[str]:
    """Names of the bundled checkpoints (``demo:<name>``)."""
    root = resource_dir("models")
    return sorted(p.parent.name.removeprefix("demo_") for p in root.glob("demo_*/model.safetensors"))


def bundled_checkpoint(spec: str) -> tuple[Path, dict[str, Any]]:
    """``"demo:clean"`` -> (path of its safetensors, its config: arch, kwargs, mean, std, classes)."""
    name = spec.split(":", 1)[1]
    folder = resource_dir("models") / f"demo_{name}"
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"No bundled checkpoint '{spec}'. Bundled: "
                              + ", ".join(f"demo:{n}" for n in bundled_models()) + ".")
    return folder / "model.safetensors", json.loads((folder / "config.json").read_text())
