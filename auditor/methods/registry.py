"""Method registry: ``register_method`` (class decorator), ``list_methods``, ``method_class``, ``create_method``."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

_METHODS: dict[str, type] = {}


def register_method(cls: type) -> type:
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def default_methods() -> list[str]:
    """The methods an audit runs when none are named: all but the costly ones (``in_default``)."""
    return [n for n in list_methods() if _METHODS[n].in_default]


def method_class(name: str) -> type:
    """The registered class of a method (its ``cost``, ``normalization``, docstring); unknown -> UsageError."""
    if name not in _METHODS:
        raise UsageError(f"Unknown method '{name}'. Available methods: {', '.join(list_methods())}.")
    return _METHODS[name]


def create_method(name: str, **kwargs: Any):
    """Instantiate a method by name; an unknown name lists the registered ones."""
    return method_class(name)(**kwargs)
