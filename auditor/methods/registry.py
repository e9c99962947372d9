"""Method registry: ``register_method`` (class decorator), ``list_methods``, ``create_method``,
and what each method is and takes (:func:`describe_method`, :func:`parse_method_options`).

A method's options are the keyword arguments of its ``__init__`` (typed by their annotations:
``int``, ``float``, ``str``, optionally ``| None``); ``option_choices`` on the class restricts
a string option to a set of values.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Mapping, Sequence

from ..errors import UsageError

_METHODS: dict[str, type] = {}


def register_method(cls: type) -> type:
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def _unknown(name: str) -> UsageError:
    return UsageError(f"Unknown method '{name}'. Available methods: {', '.join(list_methods())}.")


def default_methods() -> list[str]:
    """The methods an audit runs when none are named: all but those asked for by name (``in_default``)."""
    return [n for n in list_methods() if _METHODS[n].in_default]


def method_class(name: str) -> type:
    """The registered class of a method (its ``cost``, ``normalization``, docstring); unknown -> UsageError."""
    if name not in _METHODS:
        raise _unknown(name)
    return _METHODS[name]


def create_method(name: str, **kwargs: Any):
    """Instantiate a method by name; an unknown name lists the registered ones."""
    return method_class(name)(**kwargs)


def method_options(name: str) -> dict[str, dict[str, Any]]:
    """``{option: {"type": "int | None", "default": ..., "choices": (...)}}`` of a method."""
    if name not in _METHODS:
        raise _unknown(name)
    cls = _METHODS[name]
    choices = getattr(cls, "option_choices", {})
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: {"type": str(p.annotation), "default": p.default, **({"choices": choices[p.name]}
                                                                          if p.name in choices else {})}
            for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}


def _convert(method: str, option: str, spec: dict[str, Any], text: str) -> Any:
    kinds = [k.strip() for k in spec["type"].split("|")]
    if "None" in kinds and text.lower() == "none":
        return None
    for kind, conv in (("int", int), ("float", float)):
        if kind in kinds:
            try:
                return conv(text)
            except ValueError:
                if kinds == [kind] or kinds == [kind, "None"]:
                    raise UsageError(f"--method-option {method}.{option}={text}: expected {spec['type']}") from None
    if "choices" in spec and text not in spec["choices"]:
        raise UsageError(f"--method-option {method}.{option}={text}: choose one of {', '.join(spec['choices'])}")
    return text


def _check_option(method: str, option: str) -> dict[str, Any]:
    """The spec of ``method.option``; UsageError listing the valid options when it does not exist."""
    options = method_options(method)
    if option not in options:
        valid = ", ".join(f"{method}.{o}" for o in options) or f"none: {method} takes no options"
        raise UsageError(f"Unknown option '{method}.{option}'. Valid options: {valid}.")
    return options[option]


def parse_method_options(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["gradcam.layer=blocks.10.norm1", "rollout.head_fusion=max"]`` -> ``{method: {option: value}}``.

    Raises UsageError naming the valid methods / options for an unknown one, or the expected
    type / choices for a bad value; every method is built once with its options to check them.
    """
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        key, eq, text = spec.partition("=")
        method, dot, option = key.strip().partition(".")
        if not (eq and dot and option):
            raise UsageError(f"--method-option expects METHOD.OPTION=VALUE (e.g. rollout.head_fusion=max), got {spec!r}")
        spec = _check_option(method, option)
        out.setdefault(method, {})[option] = _convert(method, option, spec, text.strip())
    for method, kwargs in out.items():
        try:
            create_method(method, **kwargs)
        except (ValueError, TypeError) as e:
            raise UsageError(f"--method-option {method}: {e}") from None
    return out


def build_methods(methods: Sequence[Any] | None = None,
                  options: Sequence[str] | Mapping[str, Mapping[str, Any]] = ()) -> list:
    """The methods of a run: names (built with their ``options``) or configured method objects.

    ``methods``: names and / or method objects (default: :func:`default_methods`).
    ``options``: ``["rollout.head_fusion=max", ...]`` (:func:`parse_method_options`) or
    ``{"rollout": {"head_fusion": "max"}}``. An option for a method that is not run, or for a
    method given as an object, is a UsageError (it would be silently ignored otherwise).
    """
    if isinstance(options, Mapping):
        opts = {m: dict(kw) for m, kw in options.items()}
        for m, kw in opts.items():
            for k in kw:
                _check_option(m, k)
    else:
        opts = parse_method_options(options)
    items = list(methods) if methods else default_methods()
    names = [m if isinstance(m, str) else m.name for m in items]
    if len(set(names)) != len(names):
        raise UsageError(f"a method is listed twice: {', '.join(names)}")
    stray = [m for m in opts if m not in names or not isinstance(items[names.index(m)], str)]
    if stray:
        raise UsageError(f"--method-option for {', '.join(stray)}, which is not among the methods built by name "
                         f"here ({', '.join(n for n, i in zip(names, items) if isinstance(i, str))})")
    out = []
    for name, item in zip(names, items):
        if not isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(create_method(name, **opts.get(name, {})))
        except (ValueError, TypeError) as e:
            raise UsageError(f"--method-option {name}: {e}") from None
    return out


def describe_method(name: str) -> dict[str, Any]:
    """What a method is, what it needs from the model, its cost and its options."""
    if name not in _METHODS:
        raise _unknown(name)
    cls = _METHODS[name]
    doc = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0]
    needs = [what for flag, what in (("needs_attention", "readable attention and a CLS token"),
                                     ("needs_gradients", "gradients of the target"),
                                     ("needs_input_gradient", "the input gradient"),
                                     ("needs_support", "few-shot support images")) if getattr(cls, flag)]
    return {"name": name, "summary": " ".join(doc.split()), "needs": needs, "cost": cls.cost,
            "normalization": cls.normalization, "options": method_options(name)}
