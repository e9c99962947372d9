"""Input checks shared by the metric modules: validate first, then compute in float64.

Every check raises :class:`ValueError` with a message that says what to do. They never
copy more than one float64 conversion of the input.
"""

from __future__ import annotations

import numpy as np

_SWAP_HINT = "the saliency map comes first, the reference (mask / fixations / gaze map) second"


def _array(x: object, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [H, W], got {a.ndim}-D with shape {a.shape}; "
                         "squeeze channel / batch axes first")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); give at least one pixel")
    return a


def real_map(x: object, name: str = "saliency") -> np.ndarray:
    """``x`` as a finite float64 ``[H, W]`` array (integer and float dtypes accepted, bool not).

    A boolean array is refused because it is almost always a mask or fixation map passed in
    the saliency's place (or a density passed as a mask).
    """
    a = _array(x, name)
    if a.dtype == bool:
        raise ValueError(f"{name} is boolean; {_SWAP_HINT} (or cast it with .astype(float) if you mean 0/1 values)")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers (integer or float dtype), got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = int(np.size(a) - np.isfinite(a).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite value(s); replace them (e.g. np.nan_to_num) before scoring")
    return a


def same_shape(shape: tuple[int, ...], other: np.ndarray, name: str, first: str = "saliency") -> None:
    """Raise unless ``other`` has ``shape`` (the first argument's shape)."""
    if other.shape != shape:
        raise ValueError(f"{first} has shape {shape} but {name} has shape {other.shape}; both must be the same "
                         f"[H, W] (resize the saliency map to the reference's size first, e.g. auditor.maps.upsample)")


def bool_mask(x: object, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """``x`` as a non-empty boolean ``[H, W]`` array of ``shape``.

    An empty mask (no pixel True) is an input error: the caller validates annotations.
    """
    a = _array(x, name)
    if a.dtype != bool:
        raise ValueError(f"{name} must be a boolean array, got dtype {a.dtype}; {_SWAP_HINT} "
                         f"(convert a 0/1 array with .astype(bool))")
    same_shape(shape, a, name)
    if not a.any():
        raise ValueError(f"{name} has no True pixel; it must mark at least one pixel (drop images without "
                         f"annotations before scoring)")
    return a


def density(x: object, shape: tuple[int, ...], name: str = "gaze_map") -> np.ndarray:
    """``x`` as a float64, non-negative, not all-zero ``[H, W]`` array of ``shape``."""
    a = real_map(x, name)
    same_shape(shape, a, name)
    if (a < 0).any():
        raise ValueError(f"{name} has negative values (min {a.min():g}); a density must be >= 0")
    if not a.any():
        raise ValueError(f"{name} is all zero: it holds no gaze; drop it before scoring")
    return a


def non_negative(a: np.ndarray, name: str = "saliency", hint: str = "") -> None:
    if (a < 0).any():
        raise ValueError(f"{name} has negative values (min {a.min():g}); {hint or 'clip or min-max normalise it first'}")


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(value: object, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def fraction(value: object, name: str) -> float:
    """A number in ``(0, 1]``."""
    v = positive_float(value, name)
    if v > 1:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return v


def is_constant(a: np.ndarray) -> bool:
    """True when every value of ``a`` is equal (tested with max == min, not std == 0)."""
    return bool(a.max() == a.min())


def shape_hw(shape: object) -> tuple[int, int]:
    """``(H, W)`` as two positive Python ints."""
    try:
        h, w = (int(v) for v in shape)  # type: ignore[union-attr]
        ok = all(not isinstance(v, bool) and v == int(v) for v in shape) and h >= 1 and w >= 1  # type: ignore[union-attr]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be (H, W) with two positive integers, got {shape!r}")
    return h, w
