"""The shared base of the CAM family: one target layer's activations and gradients.

Every CAM variant reads the same two tensors from the pass -- the target layer's activations
``A`` and the gradients ``G = d score / d A`` -- reshaped to ``B x C x h x w`` exactly as
:mod:`~.gradcam` does (ViT tokens ``B x T x C``: prefix tokens dropped, patches reshaped to
the grid, pytorch-grad-cam's ``reshape_transform``), and differs only in how it turns them
into a map (:meth:`CamMethod.cam`). So ``gradcam``, ``hirescam``, ``gradcam_plusplus``,
``xgradcam``, ``layercam``, ``eigencam`` and ``eigengradcam`` together still cost one forward
and one backward per batch.

Target layer (overridable with ``layer=``): the model adapter's (:mod:`auditor.models.adapters`),
as for ``gradcam``: ViTs the last block's ``norm1`` (tokens), timm Swin its last block's
``norm1`` (NHWC), any other model the last module, in execution order, whose output is a
feature map ``B x C x h x w`` with ``h * w > 1`` (e.g. ResNet's ``layer4``).
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Iterator

import numpy as np
import torch
import torch.nn as nn
from threadpoolctl import ThreadpoolController

from ..errors import NotApplicableError
from ..models.adapters import adapter_for
from .base import AUTO_FEATURE_MAP, MapResult, Method, Recording, token_grid
from .passes import chunks

#: ``cost`` of a method that reads the shared pass's one backward
SHARED_BACKWARD = "1 forward + 1 backward per batch, shared with every other gradient method"
#: ``cost`` of a method that reads only the shared forward
SHARED_FORWARD = "1 forward per batch, shared with every other method"


class CamMethod(Method):
    """Base of the CAM family: subclasses set ``name`` and override :meth:`cam`."""

    normalization = "relu_minmax"  # the papers' ReLU: only positive evidence
    needs_gradients = True
    cost: ClassVar[str] = SHARED_BACKWARD

    def __init__(self, layer: str | None = None):
        self.layer = layer
        self._resolved: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict:  # picklable (Ray actors): the per-model cache is rebuilt on use
        return {**self.__dict__, "_resolved": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _resolved=weakref.WeakKeyDictionary())

    def activation_layers(self, model: nn.Module) -> list[str]:
        name = self.layer or self._resolved.get(model) or adapter_for(model).gradcam_layer()
        return [name or AUTO_FEATURE_MAP]

    def recorded(self, rec: Recording) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        """``(output, gradient or None, layer name)`` of the target layer as recorded (not reshaped)."""
        key = self.activation_layers(rec.model)[0]
        if key not in rec.activations and self.layer is None:  # resolved on an earlier batch, recorded as auto
            key = AUTO_FEATURE_MAP if AUTO_FEATURE_MAP in rec.activations else key
        act, grad = rec.activations.get(key), rec.gradients.get(key)
        if act is None:
            raise NotApplicableError(f"{self.name}: no feature map (B x C x h x w or B x T x C) was recorded; "
                                     "pass a layer name")
        layer_name = rec.resolved_layers.get(key, key)
        if key == AUTO_FEATURE_MAP:
            self._resolved[rec.model] = layer_name
        return act, grad, layer_name

    def layer_tensors(self, rec: Recording) -> tuple[torch.Tensor, torch.Tensor, str]:
        """``(A, G, layer name)``: float32 activations and gradients ``B x C x h x w``.

        ``G`` is all zeros when the target does not depend on the layer (or the method asked
        for no gradients).
        """
        act, grad, layer_name = self.recorded(rec)
        if grad is None:
            grad = torch.zeros_like(act)
        act, grad = act.detach().float(), grad.detach().float()
        if act.ndim == 4 and adapter_for(rec.model).gradcam_layout == "nhwc" and not isinstance(
                dict(rec.model.named_modules()).get(layer_name), nn.Conv2d):  # B x h x w x C -> B x C x h x w (a conv: NCHW)
            act, grad = act.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
        if act.ndim == 3:  # tokens B x T x C -> B x C x h x w
            grid, prefix = token_grid(rec.model, rec.inputs, act.shape[1])
            act, grad = (t[:, prefix:].transpose(1, 2).reshape(t.shape[0], -1, *grid) for t in (act, grad))
        if act.ndim != 4:
            raise NotApplicableError(f"{self.name}: layer '{layer_name}' gives {tuple(act.shape)}, not a feature map")
        return act, grad, layer_name

    def compute(self, rec: Recording) -> MapResult:
        act, grad, layer_name = self.layer_tensors(rec)
        return MapResult(self.name, self.cam(act, grad).float(), info={"layer": layer_name})

    def cam(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Raw map ``B x h x w`` from activations and gradients ``B x C x h x w`` (float32)."""
        raise NotImplementedError


class ChannelPassesCam(CamMethod):
    """Base of the CAMs that score every channel of the layer in its own forward (Score-CAM,
    Ablation-CAM): no gradients; ``C`` extra forwards per image, ``batch_size`` at a time."""

    in_default = False
    needs_gradients = False
    needs_own_passes = True
    cost = "the shared forward + C forwards per image (C: the target layer's channels), batched; no backward"

    def __init__(self, layer: str | None = None, batch_size: int = 32):
        super().__init__(layer)
        self.batch_size = batch_size

    def channel_pairs(self, b: int, c: int) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """``(start, stop, images, channels)`` of consecutive chunks of the ``b * c`` (image, channel) pairs."""
        pairs = torch.arange(b * c)
        for lo, hi in chunks(b * c, self.batch_size):
            yield lo, hi, pairs[lo:hi] // c, pairs[lo:hi] % c


def weighted_sum(weights: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``sum_c w_c A_c``: channel weights ``B x C`` times activations ``B x C x h x w`` -> ``B x h x w``."""
    return (weights[:, :, None, None] * act).sum(1)


def first_component(x: torch.Tensor) -> torch.Tensor:
    """Projection of each image's ``C``-vectors on their first principal component: ``B x C x h x w`` -> ``B x h x w``.

    As pytorch-grad-cam's ``get_2d_projection``: NaN -> 0, the ``h*w`` rows of ``C`` values
    are centred (per channel), and projected on the first right-singular vector of numpy's
    float32 SVD (LAPACK ``gesdd``). The sign is NOT fixed (an SVD's sign is arbitrary; this
    keeps numpy's, as the reference does). ``full_matrices=False`` gives the same vector as
    the reference's ``True`` (same routine; checked on CNN and ViT shapes) without the
    ``hw x hw`` matrix.

    The SVDs run with numpy's BLAS on one thread (:func:`one_blas_thread`): its own threads would
    fight the model's for the cores (2 cores: 1.2-8.7 s for 16 ViT-S maps instead of 0.13 s). The
    images' SVDs run side by side on ``torch.get_num_threads()`` threads instead (LAPACK releases
    the GIL; each image's SVD is the same single-threaded computation, so the same result).
    """
    a = x.detach().cpu().numpy().astype(np.float32)  # a copy
    a[np.isnan(a)] = 0
    out = np.empty((a.shape[0], *a.shape[2:]), dtype=np.float32)

    def project(i: int) -> None:
        one = a[i]
        rows = one.reshape(one.shape[0], -1).T
        rows = rows - rows.mean(axis=0)
        vt = np.linalg.svd(rows, full_matrices=False)[2]
        out[i] = (rows @ vt[0]).reshape(one.shape[1:])

    with one_blas_thread(), ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        list(pool.map(project, range(len(a))))
    return torch.from_numpy(out).to(x.device)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # the BLAS libraries loaded now: numpy's is, it is imported above


def one_blas_thread() -> contextlib.AbstractContextManager:
    """numpy's BLAS / LAPACK (OpenBLAS, MKL, ...) on one thread inside the block
    (``threadpoolctl``); torch's own threads are not touched."""
    return _blas_controller().limit(limits=1, user_api="blas")
