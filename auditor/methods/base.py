"""The shared base of every method, and the one place where hooks live.

A method never runs the model itself. :func:`auditor.methods.compute_maps` plans one pass
for all requested methods: a :class:`Recorder` registers every hook they need, one forward
runs (and, if any method needs gradients, one ``autograd.grad`` call for the batch's
targets), and each method then turns the :class:`Recording` into raw maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Collection

import torch
import torch.nn as nn

from ..errors import NotApplicableError
from ..models.adapters import adapter_for

#: Special activation name: the last feature map ``B x C x h x w`` (``h * w > 1``) that the
#: forward produced, found during the pass (Grad-CAM's default layer for CNNs).
AUTO_FEATURE_MAP = "<last feature map>"


@dataclass
class MapResult:
    """Raw maps of one method for a batch, at token / feature resolution.

    Attributes:
        method: the method's registry name.
        maps: float32 ``[B, h, w]``, signed and unnormalised (upsampling and normalisation
            are separate steps, :mod:`auditor.maps`).
        extras: optional named tensors, e.g. ``per_head`` ``[B, heads, h, w]`` or
            ``per_layer`` ``[B, L, h, w]``.
        info: what was computed (layer, head, target), for the log and results.
    """

    method: str
    maps: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording:
    """What one pass recorded. Attention tensors are ``[B, heads, T, T]`` in forward order.

    ``inputs`` is the whole forward batch: the ``num_queries`` images to explain, then any
    support images (few-shot). ``captured`` / ``captured_inputs`` hold the outputs / first
    inputs of the modules that methods asked for by name (:meth:`Method.captured_layers`),
    ``captured_outputs`` their whole outputs (tuples kept, e.g. ``(output, probabilities)``);
    ``input_gradient`` the gradient of the target scores w.r.t. ``inputs`` when asked for;
    ``attention_gradients[i]`` the gradient w.r.t. ``attentions[i]`` (same shape; None where
    that attention is off the score's path) when a method asked for them (Generic Attention).
    ``target_info``: ``kind`` and ``classes`` (one class index or None per query image) of the
    scores explained.
    """

    model: nn.Module
    inputs: torch.Tensor
    output: torch.Tensor | None = None
    attentions: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    attention_gradients: list[torch.Tensor | None] = field(default_factory=list)
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    resolved_layers: dict[str, str] = field(default_factory=dict)
    target_scores: torch.Tensor | None = None
    target_info: dict[str, Any] = field(default_factory=dict)
    captured: dict[str, Any] = field(default_factory=dict)
    captured_inputs: dict[str, Any] = field(default_factory=dict)
    captured_outputs: dict[str, Any] = field(default_factory=dict)
    input_gradient: torch.Tensor | None = None
    num_queries: int | None = None

    @property
    def num_support(self) -> int:
        return 0 if self.num_queries is None else self.inputs.shape[0] - self.num_queries


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose output is a block's post-softmax attention, as the model's adapter names them."""
    return adapter_for(model).attention_modules()


class Recorder:
    """Register forward hooks for attention and named activations; always remove them.

    Hooks are registered in ``__enter__`` and removed in ``__exit__`` whether or not the
    model raised; exceptions propagate (never swallowed). The modules the model's adapter
    names (timm attention with a ``fused_attn`` switch) are switched to the explicit path for
    the pass and restored, when attention is recorded or ``unfused`` asks for it.
    """

    def __init__(self, model: nn.Module, recording: Recording, *, attention: bool, activations: list[str],
                 captures: list[str] = (), unfused: bool = False, grad_from: Collection[str] = ()):
        self.model, self.rec, self.grad_from = model, recording, set(grad_from)
        self.attention, self.activation_names, self.capture_names = attention, activations, list(captures)
        self.unfused = attention or unfused
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._fused: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> Recording:
        try:
            if self.attention:
                adapter = adapter_for(self.model)
                forced = adapter.attention_call_kwargs()
                for name, module in adapter.attention_modules():
                    self._handles.append(module.register_forward_hook(self._attention_hook(name, adapter)))
                    if forced:  # e.g. need_weights=True: the probabilities are returned, not dropped
                        self._handles.append(module.register_forward_pre_hook(
                            lambda m, args, kwargs: (args, {**kwargs, **forced}), with_kwargs=True))
            if self.unfused:
                for m in adapter_for(self.model).fused_attention_modules():
                    self._fused.append((m, m.fused_attn))
                    m.fused_attn = False
            modules = dict(self.model.named_modules())
            for name in self.activation_names:
                if name == AUTO_FEATURE_MAP:
                    for mod_name, module in modules.items():
                        if mod_name:
                            self._handles.append(module.register_forward_hook(self._feature_map_hook(mod_name)))
                    continue
                if name not in modules:
                    raise NotApplicableError(f"the model has no layer named '{name}'")
                self._handles.append(modules[name].register_forward_hook(self._activation_hook(name)))
            for name in self.capture_names:
                if name not in modules:
                    raise NotApplicableError(f"the model has no layer named '{name}'")
                self._handles.append(modules[name].register_forward_hook(self._capture_hook(name)))
        except BaseException:
            self.release()
            raise
        return self.rec

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m, fused in self._fused:
            m.fused_attn = fused
        self._fused.clear()

    def _attention_hook(self, name: str, adapter: Any):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            probs = adapter.attention_probs(output)
            if probs is not None:
                self.rec.attentions.append((name, probs))
        return hook

    def _feature_map_hook(self, module_name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
                self.rec.activations[AUTO_FEATURE_MAP] = output
                self.rec.resolved_layers[AUTO_FEATURE_MAP] = module_name
        return hook

    def _activation_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if name in self.grad_from and not torch.is_grad_enabled():
                # the first layer the backward reaches: autograd records the forward from here on
                # (a pass started without gradients: nothing before this layer is kept for a backward)
                torch.set_grad_enabled(True)
                out = out.detach().requires_grad_().clone()  # not a leaf: later in-place ops stay legal
                self.rec.activations[name] = out
                if isinstance(output, torch.Tensor):
                    return out
                rest = (out, *output[1:])
                return output._make(rest) if hasattr(output, "_make") else type(output)(rest)
            self.rec.activations[name] = out
            return None
        return hook

    def _capture_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self.rec.captured[name] = output[0] if isinstance(output, (tuple, list)) else output
            self.rec.captured_inputs[name] = args[0] if args else None
            self.rec.captured_outputs[name] = output
        return hook


def cls_bypass_reason(model: nn.Module) -> str | None:
    """Why the model's CLS token cannot be read as a map or used as a target, or None."""
    return adapter_for(model).cls_bypass_reason()


def token_grid(model: nn.Module, inputs: torch.Tensor, num_tokens: int) -> tuple[tuple[int, int], int]:
    """``((h, w), num_prefix_tokens)`` of a token sequence of length ``num_tokens`` for ``inputs``
    ``[B, 3, H, W]``, from the model's adapter (:meth:`~auditor.models.adapters.ModelAdapter.token_grid`)."""
    return adapter_for(model).token_grid(inputs.shape[-2], inputs.shape[-1], num_tokens)


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[..., h*w]`` -> ``[..., h, w]`` (row-major, as patch embeddings flatten)."""
    return tokens.reshape(*tokens.shape[:-1], grid[0], grid[1])


class Method:
    """Base class: subclasses set ``name`` and override :meth:`compute`.

    Class attributes declare what the pass must record: ``needs_attention`` (every block's
    attention probabilities), ``needs_gradients`` (a backward from the target scores to the
    layers returned by :meth:`activation_layers`), ``needs_input_gradient`` (the gradient of
    the target scores w.r.t. the input images), ``needs_attention_gradients`` (the gradient of
    the target scores w.r.t. every recorded attention, in the same backward), ``needs_support`` (few-shot support images,
    ``compute_maps(..., support=)``); :meth:`captured_layers` names modules whose outputs
    (and first inputs) the pass must keep, without gradients.
    """

    name: ClassVar[str] = ""
    #: how :func:`auditor.maps.normalize` scales this method's maps for display and scoring
    normalization: ClassVar[str] = "minmax"
    needs_attention: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    needs_input_gradient: ClassVar[bool] = False
    needs_attention_gradients: ClassVar[bool] = False
    needs_support: ClassVar[bool] = False
    #: the pass runs attention modules on their explicit path (fused kernels off), as for
    #: ``needs_attention``, because the method reads probabilities inside them (window attention)
    needs_unfused_attention: ClassVar[bool] = False
    #: passes per batch, for ``auditor methods``, ``--help`` and the results' settings
    cost: ClassVar[str] = "1 forward per batch, shared with every other method"
    #: runs its own batched passes after the shared one (:meth:`compute_with_passes`)
    needs_own_passes: ClassVar[bool] = False
    #: under ``--amp``, computed from a float32 pass of its own: its arithmetic (LRP's divisions)
    #: amplifies the rounding of bfloat16 / float16 activations
    needs_float32: ClassVar[bool] = False
    #: part of the default method list (costly methods are asked for by name)
    in_default: ClassVar[bool] = True

    def check(self, model: nn.Module) -> None:
        """Raise :class:`NotApplicableError` (with the reason) when the method cannot apply."""

    def activation_layers(self, model: nn.Module) -> list[str]:
        """Names of modules whose output (and gradient) the pass must record."""
        return []

    def captured_layers(self, model: nn.Module) -> list[str]:
        """Names of modules whose output (and first input) the pass must keep (no gradients)."""
        return []

    def compute(self, rec: Recording) -> MapResult:
        raise NotImplementedError

    def compute_with_passes(self, rec: Recording, passes: Any) -> MapResult:
        """Maps from the shared pass plus the method's own passes (:class:`~.passes.OwnPasses`)."""
        raise NotImplementedError


class AttentionMethod(Method):
    """Base of methods that read the blocks' attention probabilities (needs a CLS token)."""

    needs_attention = True

    def check(self, model: nn.Module) -> None:
        adapter = adapter_for(model)
        reason = adapter.cls_bypass_reason()
        if reason:
            raise NotApplicableError(reason)
        if not adapter.attention_modules() and adapter.window_blocks():
            raise NotApplicableError("the model attends within windows and has no CLS token (Swin): its attention "
                                     "is mapped by window_attention")
        if not adapter.attention_modules():
            raise NotApplicableError(
                f"the model has no readable attention ({adapter.family} layout: {type(model).__name__} is a CNN, or "
                "its attention runs in one fused kernel): attention maps need transformer blocks that expose their "
                "attention weights"
            )
        if adapter.prefix_tokens() < 1:
            raise NotApplicableError("the model has no CLS token to read attention from")

    @staticmethod
    def attentions(rec: Recording) -> list[tuple[str, torch.Tensor]]:
        if not rec.attentions:
            raise NotApplicableError("no attention probabilities were recorded in the forward pass")
        return rec.attentions
