"""What each image's map explains: one :class:`Target`, resolved once, before any image is decoded.

The target of an audit is one of

* ``"label"``: the model's logit for the record's class. A data set names its classes; the
  model's head has positions. :class:`ClassMap` maps each data-set class to the model's
  index **by name** -- never by position:

  1. ``--class-map FILE`` (JSON ``{"cat": 281}`` or CSV rows ``cat,281``) when given;
  2. else the model's own class names: a bundled checkpoint's config, ``model.class_names``,
     timm's ``pretrained_cfg["label_names"]``, Hugging Face ``config.id2label``, or the shipped
     ImageNet-1k list (``imagenet_classes.txt``, WordNet ids and synonyms) for a 1000-class
     head that names none. Names match case-, space-, ``_`` and ``-``-insensitively; an
     ImageNet class matches any of its synonyms or its WordNet id;
  3. else (a model without names) data-set names that are integers are indices;
  4. a data set without class names (integer labels) indexes the head directly.

  A used data-set class that maps to no model class, or to several, is a
  :class:`~auditor.errors.UsageError` (exit 2) that names it and the fix. A record without a
  label cannot be explained: it becomes an error row, never a silent switch to the prediction.
* ``"predicted"``: the model's top class for each image.
* ``"cls-norm"`` / ``"patch-norm"``: a headless backbone's output norm (CLS token, or the mean
  patch token where the CLS token bypasses the blocks).
* ``"fewture"``: few-shot: the FewTURE classifier's logit of the query's class (the default
  with episodes, :mod:`auditor.few_shot`); ``"prototype"``: the cosine of a query's mean patch
  token with its class's support mean.

Predictions and targets are shown with the **model's** class names (``Target.model_name``).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch.nn as nn

from .errors import UsageError

TARGETS = ("label", "predicted", "fewture", "prototype")
_IMAGENET_FILE = Path(__file__).parent / "models" / "imagenet_classes.txt"


def _key(name: str) -> str:
    """Names compared case-, space-, ``_`` and ``-``-insensitively."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().casefold()


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], ...]:
    """The ImageNet-1k classes in the standard index order: ``(wnid, name, synonym, ...)`` each."""
    rows = []
    for line in _IMAGENET_FILE.read_text(encoding="utf-8").splitlines():
        wnid, _, names = line.partition(" ")
        rows.append((wnid, *[n.strip() for n in names.split(",")]))
    return tuple(rows)


@dataclass(frozen=True)
class ModelClasses:
    """A model head's class names (``None``: the model names none), each with its aliases."""

    size: int
    names: tuple[str, ...] | None
    aliases: tuple[tuple[str, ...], ...] = ()
    source: str = "none"

    def lookup(self, name: str) -> list[int]:
        """Model indices whose name (or alias) equals ``name`` (case/space-insensitively)."""
        k = _key(name)
        return [i for i, al in enumerate(self.aliases) if k in al]

    def close(self, name: str, n: int = 5) -> list[str]:
        flat = {a: i for i, al in enumerate(self.aliases) for a in al}
        return [f"{self.names[flat[a]]} ({flat[a]})" for a in difflib.get_close_matches(_key(name), flat, n=n, cutoff=0.6)]


def model_classes(model: nn.Module, size: int) -> ModelClasses:
    """The names of ``model``'s ``size`` outputs, from the first source that has them (see module doc)."""
    names = getattr(model, "class_names", None)
    source = "the checkpoint's config"
    if not names:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        names, source = cfg.get("label_names"), "the model's pretrained_cfg"
    if not names and getattr(getattr(model, "config", None), "id2label", None):
        id2label = model.config.id2label
        names = [id2label.get(i, id2label.get(str(i))) for i in range(size)]
        if any(n is None or re.fullmatch(r"LABEL_\d+", str(n)) for n in names):
            names = None  # transformers' placeholder names say nothing
        source = "the model's config.id2label"
    if names and len(names) == size:
        names = tuple(str(n) for n in names)
        return ModelClasses(size, names, tuple((_key(n),) for n in names), source)
    if size == 1000:
        rows = imagenet_classes()
        return ModelClasses(size, tuple(r[1] for r in rows), tuple(tuple(_key(a) for a in r) for r in rows),
                            "ImageNet-1k (assumed for a 1000-class head; --class-map overrides)")
    return ModelClasses(size, None)


@dataclass(frozen=True)
class ClassMap:
    """Data-set label index -> model class index, and where the mapping came from."""

    to_model: Mapping[int, int]
    source: str
    model: ModelClasses

    def to_dict(self, dataset_classes: Sequence[str]) -> dict[str, Any]:
        def show(c: int) -> str:
            return dataset_classes[c] if 0 <= c < len(dataset_classes) else str(c)

        return {"source": self.source, "model_classes": self.model.source,
                "mapping": {show(c): {"index": m, "name": self.model.names[m] if self.model.names else None}
                            for c, m in sorted(self.to_model.items())}}


def read_class_map(path: str | Path) -> dict[str, int | str]:
    """``--class-map``: JSON ``{"cat": 281}`` or CSV rows ``name,index`` (an optional header)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--class-map {path}: file not found (a JSON object {{\"cat\": 281}} or CSV rows 'cat,281')")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--class-map {path}: cannot read it ({e})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--class-map {path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise UsageError(f"--class-map {path}: expected a JSON object {{\"data-set class\": model index}}")
        pairs = list(doc.items())
    else:
        pairs = [tuple(c.strip() for c in r) for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
        bad = [r for r in pairs if len(r) != 2]
        if bad:
            raise UsageError(f"--class-map {path}: each CSV row must be 'name,index', got {list(bad[0])}")
        if pairs and not re.fullmatch(r"-?\d+", pairs[0][1]):
            pairs = pairs[1:]  # a header row
    out: dict[str, int | str] = {}
    for name, value in pairs:
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UsageError(f"--class-map {path}: the value for {name!r} must be a model class index, got {value!r}")
        out[str(name)] = value
    return out


def build_class_map(used: Iterable[int], dataset_classes: Sequence[str], model: ModelClasses,
                    given: Mapping[str, int | str] | None = None, *, given_name: str = "--class-map") -> ClassMap:
    """Map every used data-set label (indices into ``dataset_classes``) to a model index.

    Raises :class:`UsageError` naming the first class that maps to no model class (or to
    several), with the model's classes and the fix."""
    used = sorted(set(used))
    to_model: dict[int, int] = {}
    if given is not None:
        source = given_name
        keys = {_key(k): v for k, v in given.items()}
        for c in used:
            name = dataset_classes[c] if dataset_classes else str(c)
            if _key(name) not in keys:
                raise UsageError(f"{given_name} has no entry for the data set's class {name!r}; add a line "
                                 f"'{name},<model index>' (it maps {len(given)} class(es): "
                                 f"{', '.join(list(given)[:8])}{', ...' if len(given) > 8 else ''})")
            to_model[c] = _model_index(keys[_key(name)], name, model, given_name)
    elif not dataset_classes:
        source = "labels are the model's class indices (the data set names no classes)"
        to_model = {c: _model_index(c, str(c), model, "the label") for c in used}
    elif model.names is not None:
        source = f"by name, the model's classes from {model.source}"
        for c in used:
            hits = model.lookup(dataset_classes[c])
            if len(hits) != 1:
                raise UsageError(_no_match(dataset_classes[c], hits, model))
            to_model[c] = hits[0]
    elif all(re.fullmatch(r"\d+", str(dataset_classes[c]).strip()) for c in used):
        source = "the data set's class names are the model's class indices"
        to_model = {c: _model_index(int(dataset_classes[c]), dataset_classes[c], model, "the class name") for c in used}
    else:
        names = [dataset_classes[c] for c in used]
        raise UsageError(f"The data set names its classes ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}) "
                         f"but the model does not name its {model.size} outputs, so they cannot be matched by name. "
                         "Pass --class-map FILE (JSON {\"cat\": 3} or CSV rows 'cat,3'), or give integer labels "
                         "that are the model's class indices.")
    return ClassMap(to_model, source, model)


def _model_index(value: int | str, name: str, model: ModelClasses, where: str) -> int:
    if isinstance(value, str):  # a model class name
        hits = model.lookup(value) if model.names else []
        if len(hits) != 1:
            raise UsageError(f"{where} maps {name!r} to {value!r}, which is not one of the model's class names"
                             + (f" (close: {', '.join(model.close(value))})" if model.names and model.close(value) else ""))
        return hits[0]
    if not 0 <= value < model.size:
        raise UsageError(f"{where} maps {name!r} to class {value}, but the model has {model.size} classes (0-{model.size - 1})")
    return int(value)


def _no_match(name: str, hits: list[int], model: ModelClasses) -> str:
    if hits:
        options = ", ".join(f"{model.names[i]} ({i})" for i in hits)
        return (f"The data set's class {name!r} matches several of the model's classes: {options}. "
                "Pass --class-map FILE to say which.")
    if len(model.names) <= 30:
        listing = "the model's classes: " + ", ".join(f"{n} ({i})" for i, n in enumerate(model.names))
    else:
        close = model.close(name)
        listing = (f"the model has {len(model.names)} classes ({model.source})"
                   + (f"; close names: {', '.join(close)}" if close else ""))
    return (f"The data set's class {name!r} maps to no class of the model ({listing}). Rename the class, pass "
            "--class-map FILE (JSON {\"" + name + "\": <index>} or CSV rows 'name,index'), or use integer labels.")


@dataclass(frozen=True)
class Target:
    """What is explained for each image, and why (``reason``, a sentence for logs and results).

    ``kind``: ``"label"``, ``"predicted"``, ``"cls-norm"``, ``"patch-norm"`` or ``"prototype"``.
    ``class_map``: with ``"label"``, data-set label -> model index. ``model``: the head's names.
    """

    kind: str
    reason: str
    class_map: ClassMap | None = None
    model: ModelClasses | None = None
    dataset_classes: tuple[str, ...] = field(default=())

    def engine_spec(self, records: Sequence[Any]) -> Any:
        """What :func:`auditor.methods.compute_maps` takes for these records: model indices,
        ``"predicted"``, ``"prototype"``, or ``None`` (a headless model's default token norm)."""
        if self.kind == "label":
            return [self.class_map.to_model[r.label] for r in records]
        if self.kind in ("cls-norm", "patch-norm"):
            return None
        return self.kind

    def model_index(self, label: int) -> int:
        """The model's index of data-set label ``label`` (``"label"`` targets)."""
        return self.class_map.to_model[label]

    def model_name(self, index: int | None) -> str | None:
        """The model's name of class ``index`` (``None`` when the model names none)."""
        if index is None or self.model is None or self.model.names is None or not 0 <= index < self.model.size:
            return None
        return self.model.names[index]

    def record_problem(self, record: Any) -> str | None:
        """Why ``record`` cannot be explained with this target (an error row), or None."""
        if self.kind == "label" and record.label is None:
            return ("the record has no label, so the 'label' target cannot be explained; give it a label, "
                    "or run with --target predicted")
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "reason": self.reason}
        if self.class_map is not None:
            out["class_map"] = self.class_map.to_dict(self.dataset_classes)
        return out


def output_size(model: nn.Module, preprocess: Any) -> int:
    """The number of the model's outputs per image: ``num_classes`` when it says, else one
    probe forward of a black image at the input size (no gradients)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    import torch

    dev = next(model.parameters()).device
    x = torch.zeros(1, 3, *preprocess.size, device=dev)
    with torch.no_grad():
        out = model.eval()(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if out.ndim != 2:
        raise UsageError(f"{type(model).__name__} returned shape {tuple(out.shape)} for one image; expected "
                         "[batch, classes] or [batch, features]")
    return int(out.shape[1])


def resolve_target(requested: str | None, model: nn.Module, records: Sequence[Any], dataset_classes: Sequence[str],
                   *, size: int, episodes: bool, class_map: str | Path | Mapping[str, int] | None = None) -> Target:
    """The audit's :class:`Target`, from ``--target`` (``None``: the default), before any image
    is decoded. ``size``: the model's outputs per image (:func:`output_size`). ``class_map``:
    a ``--class-map`` file, or a dict ``{data-set class: model index or name}``."""
    from .methods.base import cls_bypass_reason
    from .methods.engine import is_headless

    kind = requested or ("fewture" if episodes else "label")
    if kind not in TARGETS:
        raise UsageError(f"--target must be one of {', '.join(TARGETS)}, got {kind!r}")
    if kind in ("prototype", "fewture") and not episodes:
        raise UsageError(f"--target {kind} compares each image with its episode's support images: "
                         "it needs few-shot episodes (--episodes N)")
    if episodes and kind == "predicted":
        raise UsageError("--target predicted is not available with --episodes: the head's prediction over all "
                         "its classes is not the episode's N-way decision; use --target fewture (the default) "
                         "or --target label (the logit of the query's true class)")
    headless = is_headless(model)
    if headless and kind in ("label", "predicted"):
        if requested is not None or episodes:
            raise UsageError(f"--target {kind} needs class logits, but this backbone has no class head; "
                             + ("in episodes use --target fewture (the default)" if episodes else
                                "leave --target out to explain the norm of its output"))
        bypass = cls_bypass_reason(model)
        norm = "patch-norm" if bypass else "cls-norm"
        why = ("the model has no class head: the norm of its mean final patch token is explained (" + bypass + ")"
               if bypass else "the model has no class head: the norm of its CLS output token is explained")
        return Target(norm, why, model=ModelClasses(size, None))
    classes = model_classes(model, size) if not headless else ModelClasses(size, None)
    if kind == "prototype":
        return Target(kind, "few-shot: the cosine of each query's mean patch token with its class's support mean",
                      model=classes, dataset_classes=tuple(dataset_classes))
    if kind == "fewture":
        return Target(kind, "few-shot: the FewTURE classifier's logit of each query's class (patch-token cosine "
                      "with the episode's support, temperature, logsumexp)", model=classes,
                      dataset_classes=tuple(dataset_classes))
    if kind == "predicted":
        return Target(kind, "each image's predicted class (the model's top logit)", model=classes,
                      dataset_classes=tuple(dataset_classes))
    used = [r.label for r in records if r.label is not None]
    if not used:
        raise UsageError("--target label explains each image's labelled class, but no record has a label; "
                         "label the records, or run with --target predicted")
    given = None if class_map is None else dict(class_map) if isinstance(class_map, Mapping) else read_class_map(class_map)
    cmap = build_class_map(used, dataset_classes, classes, given)
    return Target("label", f"each record's labelled class, mapped to the model's classes ({cmap.source})",
                  class_map=cmap, model=classes, dataset_classes=tuple(dataset_classes))
