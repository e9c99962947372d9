"""Checkpoint loading in one place (the timm ``_helpers.py`` habit).

``.pth`` / ``.pt`` / ``.ckpt`` files are read with ``torch.load(weights_only=True)`` (a
pickle that would run code is refused); ``.safetensors`` with safetensors. Containers
(``params``, ``params_ema``, ``state_dict``, ``model``, ``teacher``, ``student``) are
unwrapped; prefixes ``module.``, ``_orig_mod.``, ``backbone.`` are stripped. Loading is
strict by default: keys or shapes that do not fit raise :class:`CheckpointError` naming
them -- never a silently random model.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import CheckpointError

CONTAINER_KEYS = ("params", "params_ema", "state_dict", "model", "teacher", "student")
STRIP_PREFIXES = ("module.", "_orig_mod.")
#: Keys of masked-image-modelling pretraining that a backbone does not use.
IGNORED_KEYS = ("masked_embed", "mask_token")


def _safe_globals() -> list[Any]:
    """numpy scalars that training scripts store beside the weights (``val_acc`` ...)."""
    core = getattr(np, "_core", None) or np.core
    items: list[Any] = [core.multiarray.scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType") if hasattr(dtypes, n)]
    return items


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: the container used and the keys it set aside."""

    path: str
    sha256: str
    container: str | None = None
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_file(path: Path, *, trust: bool) -> Any:
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path}. Check the path; the file must be a .pth/.pt state_dict "
            "(optionally inside 'params', 'state_dict' or 'model') or a .safetensors file."
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"Cannot read safetensors checkpoint {path}: {e} (truncated or not a safetensors file?)") from None
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch's zip format, or a pickle
        raise CheckpointError(
            f"Cannot read checkpoint {path}: it is neither a PyTorch zip archive nor a pickle "
            f"({'an empty file' if not head else 'starts with ' + repr(head)}). Is it truncated, or not a PyTorch checkpoint?"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol ..." noise
            if trust:
                return torch.load(path, map_location="cpu", weights_only=False)
            with torch.serialization.safe_globals(_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise CheckpointError(
            f"Refused to unpickle {path}: it holds objects other than tensors and plain data, which could run "
            f"code when loaded ({first[:200]}). Re-save it as a state_dict or .safetensors file, or pass "
            "--trust-checkpoint only if you trust its source."
        ) from None
    except Exception as e:  # any failure to parse untrusted bytes means "not a readable checkpoint"
        reason = f"{type(e).__name__}: {e}"[:300]
        raise CheckpointError(
            f"Cannot read checkpoint {path} ({reason}). Is it truncated, or not a PyTorch checkpoint?"
        ) from None


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    container = None
    while isinstance(obj, dict):
        key = next((k for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], dict)), None)
        if key is None:
            break
        container = key if container is None else f"{container}.{key}"
        obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} is not a checkpoint: expected a state_dict (a dict of tensors), got {type(obj).__name__}.")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path} holds no tensors under {container or 'its top level'} (keys: {', '.join(map(str, list(obj)[:8]))})."
        )
    return tensors, container


def _strip_prefixes(sd: dict[str, torch.Tensor], ignored: list[str]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    if any(k.startswith("backbone.") for k in sd):  # DINO / iBOT teacher or student: keep the backbone
        ignored.extend(k for k in sd if not k.startswith("backbone."))
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def read_state_dict(path: str | Path, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Read a checkpoint file into a flat state_dict, container and prefixes removed."""
    path = Path(path)
    raw = _read_file(path, trust=trust)
    sd, container = _unwrap(raw, path)
    report = LoadReport(path=str(path), sha256=sha256_file(path), container=container)
    sd = _strip_prefixes(sd, report.ignored)
    return sd, report


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True, trust: bool = False) -> LoadReport:
    """Load ``path`` into ``model`` and return a :class:`LoadReport`.

    Raises:
        CheckpointError: missing / unreadable / unsafe file, or (``strict``) keys or shapes
            that do not fit; the message lists the first offending keys.
    """
    sd, report = read_state_dict(path, trust=trust)
    return apply_state_dict(model, sd, report, strict=strict)


def apply_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], report: LoadReport, *,
                     strict: bool = True) -> LoadReport:
    """Load a state_dict from :func:`read_state_dict` into ``model`` (see :func:`load_checkpoint`)."""
    own = model.state_dict()
    for key in IGNORED_KEYS:
        if key in sd and key not in own:
            sd = {k: v for k, v in sd.items() if k != key}
            report.notices.append(f"ignored '{key}' (masked-image pretraining, unused by the backbone)")
    if report.ignored:
        report.notices.append(f"ignored {len(report.ignored)} non-backbone keys (e.g. {', '.join(report.ignored[:3])})")
    filt = getattr(model, "checkpoint_filter", None)
    if callable(filt):  # it may resize the model's own tensors too (DINOv2 keeps its position grid)
        sd = filt(sd)
        own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    report.missing = [k for k in own if k not in sd]
    report.unexpected = [k for k in sd if k not in own]
    if mismatched or (strict and (report.missing or report.unexpected)):
        parts = []
        if mismatched:
            parts.append(f"shape mismatch for {len(mismatched)} key(s): " + "; ".join(mismatched[:5]))
        if strict and report.missing:
            parts.append(f"missing {len(report.missing)} key(s): " + ", ".join(report.missing[:5]))
        if strict and report.unexpected:
            parts.append(f"unexpected {len(report.unexpected)} key(s): " + ", ".join(report.unexpected[:5]))
        raise CheckpointError(
            f"Checkpoint {report.path} does not fit the model ({type(model).__name__}): " + " | ".join(parts)
            + ". Check --arch, --patch_size and --image_size (or the model's flags) against how it was trained."
        )
    model.load_state_dict(sd, strict=strict)
    return report


#: Classifier weights whose rows are the classes: timm / DINO ``head``, efficientnet_pytorch ``_fc``.
CLASSIFIER_KEYS = ("head.weight", "_fc.weight")


def infer_num_classes(state_dict: dict[str, torch.Tensor]) -> int:
    """Classes of a checkpoint's ``head.weight`` or ``_fc.weight`` (0 for a headless backbone)."""
    w = next((state_dict[k] for k in CLASSIFIER_KEYS if k in state_dict), None)
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 2 else 0


def infer_patch_size(state_dict: dict[str, torch.Tensor]) -> int | None:
    """Patch size of a ViT checkpoint's ``patch_embed.proj.weight`` (square patches), or None."""
    w = state_dict.get("patch_embed.proj.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[-1] == w.shape[-2]:
        return int(w.shape[-1])
    return None
