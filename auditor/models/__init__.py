"""Model registry, reference architectures and checkpoint loading."""

from ._build import LoadedModel, build_model, check_model_spec, resolve_device
from ._checkpoint import (LoadReport, apply_state_dict, infer_num_classes, infer_patch_size, load_checkpoint,
                          read_state_dict, sha256_file)
from ._registry import create_model, describe_model, list_models, load_factory, register_model, resolve_model
from . import vit  # noqa: F401  (registers the ViT family)
from . import efficientnet_lite  # noqa: F401  (registers efficientnet_lite0)

__all__ = [
    "LoadReport", "LoadedModel", "apply_state_dict", "build_model", "check_model_spec", "create_model", "describe_model",
    "infer_patch_size", "infer_num_classes", "list_models", "load_checkpoint", "load_factory",
    "read_state_dict", "register_model", "resolve_device", "resolve_model", "sha256_file",
]
