"""Attention and saliency methods: one file each on a shared base, one pass for all.

>>> from auditor.methods import compute_maps, create_method
>>> res = compute_maps(model, x, [create_method("gradcam"), create_method("rollout")])
>>> res.maps["gradcam"].maps.shape   # B x h x w, raw
"""

from .base import MapResult, Method, Recorder, Recording
from .engine import PassResult, compute_maps, is_headless, target_scores
from .registry import build_methods, create_method, describe_method, list_methods, method_options, parse_method_options, register_method
from . import (channel_attention, cls_attention, gradcam, input_gradient, ocab_attention,  # noqa: F401
               reconstruction_attention, rollout, window_attention)  # (register the methods)

__all__ = [
    "MapResult", "Method", "PassResult", "Recorder", "Recording", "build_methods", "compute_maps", "create_method", "describe_method",
    "is_headless", "list_methods", "method_options", "parse_method_options", "register_method", "target_scores",
]
