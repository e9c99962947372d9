"""Model registry: a dict plus a decorator (the timm habit).

Three ways to get a model, tried in this order by :func:`resolve_model`:

1. ``factory="package.module:function"`` -- any ``nn.Module`` factory;
2. a built-in architecture registered here with :func:`register_model`;
3. the user's own ``models`` package in the current directory (the seed's convention:
   ``--arch`` is looked up in ``models/__init__.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from ..errors import ModelNotFoundError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: file ``fn`` under its ``__name__``."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the built-in architectures, sorted."""
    return sorted(_REGISTRY)


def describe_model(name: str) -> dict[str, Any]:
    """A built-in architecture's name, summary (its docstring) and family (its module's first line)."""
    if name not in _REGISTRY:
        raise ModelNotFoundError(_not_found_message(name))
    fn = _REGISTRY[name]
    family = (sys.modules[fn.__module__].__doc__ or "").strip().split("\n\n")[0]
    return {"name": name, "summary": " ".join((fn.__doc__ or "").split()), "family": " ".join(family.split())}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture; an unknown name lists what exists."""
    if name not in _REGISTRY:
        raise ModelNotFoundError(_not_found_message(name))
    return _REGISTRY[name](**kwargs)


def _not_found_message(name: str) -> str:
    return (
        f"Cannot find model '{name}'. Built-in architectures: {', '.join(list_models())}. "
        "Other ways to supply a model: (a) put a `models` package in the current directory whose "
        f"`models/__init__.py` defines `{name}` (the original guide's convention), or "
        "(b) pass --model package.module:factory for any function that returns an nn.Module."
    )


def _call_with_accepted(fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    """Call a user factory with the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def _user_models_package(cwd: Path):
    """Import ``./models`` (a package with ``__init__.py``) or return None."""
    init = cwd / "models" / "__init__.py"
    if not init.is_file():
        return None
    existing = sys.modules.get("models")
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == init.resolve():
        return existing
    spec = importlib.util.spec_from_file_location("models", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["models"] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop("models", None)
        raise
    return module


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """``"package.module:function"`` -> the function (the current directory is importable)."""
    if ":" not in spec:
        raise ModelNotFoundError(f"--model expects 'package.module:factory', got '{spec}'.")
    mod_name, _, attr = spec.partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelNotFoundError(f"Cannot import '{mod_name}' for --model {spec}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelNotFoundError(f"'{mod_name}' has no callable '{attr}' (from --model {spec}).")
    return fn


def resolve_model(arch: str | None = None, *, factory: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a model from a factory spec, a built-in name, or the user's ``models`` package.

    ``kwargs`` (e.g. ``patch_size``, ``image_size``, ``num_classes``) go to built-ins as
    given, and to user factories filtered by what their signature accepts.
    """
    if factory:
        model = _call_with_accepted(load_factory(factory), kwargs)
    elif arch in _REGISTRY:
        model = create_model(arch, **kwargs)
    else:
        if not arch:
            raise ModelNotFoundError("No model given: pass --arch NAME or --model package.module:factory.")
        user = _user_models_package(Path.cwd())
        fn = getattr(user, arch, None) if user is not None else None
        if not callable(fn):
            raise ModelNotFoundError(_not_found_message(arch))
        model = _call_with_accepted(fn, kwargs)
    if not isinstance(model, nn.Module):
        raise ModelNotFoundError(f"The model factory returned {type(model).__name__}, not a torch.nn.Module.")
    return model
