"""A user's library model: ``--model timm:NAME`` and ``--model hf:PATH``.

* ``timm:NAME`` builds ``timm.create_model(NAME, pretrained=False)`` (never a hub download) and
  loads ``--checkpoint`` with the project's own strict loader (:mod:`._checkpoint`): the class
  head is resized to the checkpoint's (``default_cfg["classifier"]``, 0 rows: headless).
* ``hf:PATH`` loads a local Hugging Face transformers folder (``config.json`` + weights) with
  ``local_files_only=True`` and ``attn_implementation="eager"`` (so each attention module
  returns its probabilities), strictly: a missing or mismatched weight is an error, never a
  random initialisation. The model is wrapped in :class:`HFVisionModel`, an ``nn.Module``
  taking images ``[B, 3, H, W]`` and returning logits (or, headless, the image feature).

timm and transformers are optional (extras ``[timm]``, ``[hf]``): without them the route is a
clear :class:`~auditor.errors.UsageError` (exit 2), and the package never imports them otherwise.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, ModelNotFoundError, UsageError
from ._checkpoint import LoadReport, apply_state_dict, read_state_dict, sha256_file

#: ``--model`` prefixes served here -> (module to import, pyproject extra)
LIBRARIES = {"timm": ("timm", "timm"), "hf": ("transformers", "hf")}
#: HF model types whose headless output is the CLS token of ``last_hidden_state`` (already
#: layer-normed; ViT / DeiT's ``pooler_output`` is an extra tanh layer); others use ``pooler_output``
HF_CLS_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers")


def is_library_spec(spec: str | None) -> bool:
    return bool(spec) and spec.split(":", 1)[0] in LIBRARIES and ":" in spec


def _require(prefix: str, spec: str):
    module, extra = LIBRARIES[prefix]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"--model {spec} needs the '{module}' package, which is not installed: "
                         f"pip install 'attention-auditor[{extra}]'") from None


def load_library_model(spec: str, checkpoint: str | Path | None = None, *,
                       trust: bool = False) -> tuple[nn.Module, LoadReport | None]:
    """``"timm:NAME"`` / ``"hf:PATH"`` -> (model in eval mode, what was loaded)."""
    prefix, _, target = spec.partition(":")
    lib = _require(prefix, spec)
    if not target:
        raise UsageError(f"--model {spec}: give a name after '{prefix}:' (e.g. timm:vit_small_patch14_dinov2, "
                         "hf:./my-model-folder)")
    if prefix == "timm":
        return _timm_model(lib, target, spec, checkpoint, trust)
    if checkpoint is not None:
        raise UsageError(f"--model {spec} reads its weights from the folder; drop --checkpoint")
    return _hf_model(lib, Path(target), spec)


def _timm_model(timm, name: str, spec: str, checkpoint, trust: bool) -> tuple[nn.Module, LoadReport | None]:
    if not timm.is_model(name):
        raise ModelNotFoundError(f"timm has no model '{name}' (from --model {spec}); list them with "
                                 "python -c \"import timm; print(timm.list_models('*vit*'))\"")
    model = timm.create_model(name, pretrained=False)
    if checkpoint is None:
        return model.eval(), None
    sd, report = read_state_dict(checkpoint, trust=trust)
    heads = model.default_cfg.get("classifier", "head")
    head = heads[0] if isinstance(heads, (tuple, list)) else heads
    w = sd.get(f"{head}.weight")
    classes = int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 2 else 0
    if classes != model.num_classes:
        model.reset_classifier(classes)
    apply_state_dict(model, sd, report)
    return model.eval(), report


class HFVisionModel(nn.Module):
    """A transformers vision model as an ``nn.Module`` of images: ``forward(x)`` ``[B, 3, H, W]`` ->
    logits ``[B, classes]`` or, headless (``num_classes == 0``), the image feature ``[B, C]``.
    Other input sizes than the config's use the model's own ``interpolate_pos_encoding``."""

    def __init__(self, hf: nn.Module, classify: bool):
        super().__init__()
        if getattr(hf.config, "model_type", "") == "clip":  # a whole CLIP: its image tower
            hf = hf.vision_model
        self.hf = hf
        self.config = hf.config  # its id2label names the classes (auditor.target.model_classes)
        self.model_type = str(getattr(hf.config, "model_type", ""))
        self.num_classes = int(hf.config.num_labels) if classify else 0
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(hf.forward).parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.hf(pixel_values=x, **kwargs)
        if self.num_classes:
            return out.logits
        if self.model_type in HF_CLS_TYPES or getattr(out, "pooler_output", None) is None:
            return out.last_hidden_state[:, 0]
        return out.pooler_output


def _hf_default_cfg(folder: Path, config: Any) -> dict[str, Any]:
    """Input size, mean and std from ``preprocessor_config.json`` (or the config's image size); the
    whole file under ``"image_processor"``."""
    size = getattr(config, "image_size", 224)
    cfg: dict[str, Any] = {"input_size": (3, *((size, size) if isinstance(size, int) else size))}
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        if "image_mean" in p and "image_std" in p:
            cfg.update(mean=tuple(p["image_mean"]), std=tuple(p["image_std"]))
        cfg["image_processor"] = p  # its resize / crop: auditor.preprocess.from_hf_processor
    return cfg


def _hf_model(transformers, folder: Path, spec: str) -> tuple[nn.Module, LoadReport | None]:
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"--model {spec}: {folder} has no config.json; point it at a folder saved with "
                              "save_pretrained() (config.json + model.safetensors)")
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    classify = any(a.endswith("ForImageClassification") or a.endswith("ForImageClassificationWithTeacher")
                   for a in (getattr(config, "architectures", None) or []))
    auto = transformers.AutoModelForImageClassification if classify else transformers.AutoModel
    bars = transformers.utils.logging
    shown = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()  # "Loading weights: 100%|...": noise in an audit's console
    try:
        hf, info = auto.from_pretrained(folder, local_files_only=True, attn_implementation="eager",
                                        output_loading_info=True)
    finally:
        if shown:
            bars.enable_progress_bar()
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, list(v)[:5]))}" for k, v in bad.items())
        raise CheckpointError(f"--model {spec}: the weights in {folder} do not fit its config ({detail}); "
                              "a partly random model is never audited")
    model = HFVisionModel(hf, classify).eval()
    model.default_cfg = _hf_default_cfg(folder, config)
    weights = next((p for p in (folder / "model.safetensors", folder / "pytorch_model.bin") if p.is_file()), None)
    report = None if weights is None else LoadReport(path=str(weights), sha256=sha256_file(weights))
    return model, report
