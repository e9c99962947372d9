"""Attention and saliency methods: one file each on a shared base, one pass for all.

>>> from auditor.methods import compute_maps, create_method
>>> res = compute_maps(model, x, [create_method("gradcam"), create_method("rollout")])
>>> res.maps["gradcam"].maps.shape   # B x h x w, raw
"""

from .base import MapResult, Method, Recorder, Recording
from .engine import PassResult, compute_maps, is_headless, target_scores
from .registry import (build_methods, create_method, default_methods, describe_method, list_methods, method_class,
                       method_options, parse_method_options, register_method)
from . import (ablationcam, attnlrp, channel_attention, cls_attention, eigencam, eigengradcam,  # noqa: F401
               generic_attention, gradcam, gradcam_plusplus, hirescam, input_gradient, integrated_gradients,
               layercam, legrad, occlusion, ocab_attention, reconstruction_attention, rise, rollout, scorecam,
               smoothgrad, transformer_attribution, window_attention, xgradcam)  # (register the methods)

__all__ = [
    "MapResult", "Method", "PassResult", "Recorder", "Recording", "build_methods", "compute_maps", "create_method",
    "default_methods", "describe_method", "is_headless", "list_methods", "method_class", "method_options",
    "parse_method_options", "register_method", "target_scores",
]
