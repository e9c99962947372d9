"""One audit's settings (:class:`AuditConfig`) and its first stage, :func:`validate`.

``auditor run``, ``compare``, ``demo`` and the pytest fixture build an :class:`AuditConfig`;
:func:`auditor.runner.run_audit` takes it through the stages validate -> plan -> execute ->
summarise -> gate -> write. :func:`validate` does everything that can fail on the user's
input before a single image is decoded or a file is written to ``out``: options, the data
set's records (parsed, not decoded), the model and checkpoint, the methods, the
:class:`~auditor.target.Target` and its class map, and every threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import AuditorError, UsageError
from .gate import GateOptions, split_error_checks, validate_checks
from .target import Target, output_size, resolve_target
from .thresholds import Check, load_thresholds, parse_assignment


@dataclass
class AuditConfig:
    """Every option of an audit; the keyword arguments of :func:`auditor.runner.run_audit`.

    The model is ``arch`` / ``factory`` (+ ``checkpoint``) as on the command line, or an
    ``nn.Module`` given as ``model``. ``methods``: names and / or configured method objects;
    ``method_options``: ``["rollout.head_fusion=max", ...]`` or ``{"rollout": {...}}`` for methods
    given by name (:func:`auditor.methods.build_methods`). Gate options: ``max_nan``, ``max_errors`` (``None``: the
    thresholds file's ``[errors] max``, else 0), ``gate_on`` (:mod:`auditor.gate`). ``resize``:
    ``"auto"`` (the model's own data config, else squash), ``"squash"`` or ``"crop"``
    (:func:`auditor.preprocess.model_preprocess`).
    """

    data: str | Path
    out: str | Path
    arch: str | None = None
    factory: str | None = None
    model: torch.nn.Module | None = None
    checkpoint: str | Path | None = None
    methods: Sequence[Any] | None = None
    method_options: Sequence[str] | dict[str, dict[str, Any]] = ()
    thresholds: str | Path | None = None
    fail_under: Sequence[str] = ()
    max_drop: Sequence[str] = ()
    baseline: str | Path | None = None
    batch_size: int = 16
    save_maps: bool = False
    device: str = "cpu"
    image_size: int | tuple[int, int] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    resize: str = "auto"
    target: str | None = None
    class_map: str | Path | Mapping[str, int] | None = None
    allow_outside_root: bool = False
    overwrite: bool = False
    trust_checkpoint: bool = False
    patch_size: int | None = None
    model_kwargs: dict[str, Any] | None = None
    seed: int = 0
    progress: Callable[[int, int], None] | None = None
    report: bool = False
    resume: bool = False
    faithfulness: str | Sequence[str] | None = None
    faithfulness_steps: int = 10
    faithfulness_baseline: str = "blur"
    episodes: Any = None
    split: str | None = None
    amp: bool = False
    engine: str = "auto"
    workers: int | None = None
    max_nan: int = 0
    max_errors: int | None = None
    gate_on: str = "mean"
    allow_different_data: bool = False
    mask_classes: str = "target"
    score_size: int | None = None


ENGINES = ("auto", "local", "processes", "ray")


@dataclass
class Setup:
    """What :func:`validate` resolved: everything the later stages need, nothing written yet."""

    dataset: Any
    loaded: Any
    methods: list
    skipped: dict[str, str]
    pre: Any
    target: Target
    checks: list[Check]
    gate: GateOptions
    baseline: Any = None
    faith: Any = None
    plan: Any = None

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model


def validate(cfg: AuditConfig) -> Setup:
    """Check every option, threshold and input that can be checked without decoding an image."""
    from .data import check_mask_classes, load_dataset
    from .episodes import check_model, plan_episodes
    from .methods import build_methods
    from .models import LoadedModel, build_model, resolve_device
    from .results import AuditResult
    from .visualize import input_preprocess

    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got '{cfg.engine}'")
    if cfg.workers is not None and cfg.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {cfg.workers}")
    if cfg.overwrite and cfg.resume:
        raise UsageError("--overwrite and --resume exclude each other: --resume continues the run in --out, "
                         "--overwrite starts it again.")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose a folder path.")
    if cfg.engine == "ray":
        from .ray_engine import require_ray

        require_ray()
    check_mask_classes(cfg.mask_classes)
    from .preprocess import RESIZE_MODES

    if cfg.resize not in RESIZE_MODES:
        raise UsageError(f"resize={cfg.resize!r}: choose one of {', '.join(RESIZE_MODES)}")
    if cfg.score_size is not None and (isinstance(cfg.score_size, bool) or not isinstance(cfg.score_size, int)
                                       or cfg.score_size < 8):
        raise UsageError(f"score_size={cfg.score_size!r}: give the longest side to score at, in pixels (an integer "
                         ">= 8), or None to score at each image's own size")
    if cfg.episodes and cfg.faithfulness:
        raise UsageError("--faithfulness does not run with --episodes yet: its checks re-run the model without "
                         "the episode's support images; run them in a separate audit without --episodes")
    faith = None
    if cfg.faithfulness:
        from .faithfulness import FaithfulnessOptions

        faith = FaithfulnessOptions(cfg.faithfulness, steps=cfg.faithfulness_steps,
                                    baseline=cfg.faithfulness_baseline, seed=cfg.seed)
    checks: list[Check] = load_thresholds(cfg.thresholds) if cfg.thresholds else []
    checks += [parse_assignment(s, "min") for s in cfg.fail_under] + [parse_assignment(s, "max_drop")
                                                                     for s in cfg.max_drop]
    checks, max_errors = split_error_checks(checks, cfg.max_errors)
    gate = GateOptions(max_nan=cfg.max_nan, max_errors=max_errors, gate_on=cfg.gate_on)
    baseline = AuditResult.load(cfg.baseline) if cfg.baseline else None
    dataset = load_dataset(cfg.data, allow_outside_root=cfg.allow_outside_root, split=cfg.split)
    plan = plan_episodes(dataset, cfg.episodes, target=cfg.target or "fewture", checkpoint=cfg.checkpoint,
                         trust=cfg.trust_checkpoint) if cfg.episodes else None
    if cfg.model is not None:  # an nn.Module from the caller (the pytest fixture, notebooks)
        loaded = LoadedModel(cfg.model.to(resolve_device(cfg.device)).eval(), type(cfg.model).__name__, None, {})
    else:
        loaded = build_model(cfg.arch, factory=cfg.factory, checkpoint=cfg.checkpoint, patch_size=cfg.patch_size,
                             image_size=cfg.image_size, device=cfg.device, trust_checkpoint=cfg.trust_checkpoint,
                             **(cfg.model_kwargs or {}))
    model = loaded.model
    method_objs = build_methods(cfg.methods, cfg.method_options)
    pre = input_preprocess(model, cfg.image_size, cfg.mean, cfg.std, cfg.resize)
    records = dataset.records if plan is None else [r for ep in plan.episodes for r in (*ep.query, *ep.support)]
    target = resolve_target(cfg.target, model, records, dataset.classes, size=output_size(model, pre),
                            episodes=plan is not None, class_map=cfg.class_map)
    if plan is not None:
        check_model(model, target.kind)
    skipped = skipped_methods(model, method_objs, episodes=plan is not None)
    kinds = annotation_kinds(dataset.records)
    if not kinds and faith is None and plan is None:
        raise UsageError(f"Nothing to score in {cfg.data}: no record has boxes, fixations or a gaze map, and no "
                         "--faithfulness check was asked for. Add annotations to the records, run --faithfulness, "
                         "or look at single images with `auditor visualize`.")
    methods_known = {m.name: skipped.get(m.name) for m in method_objs}
    methods_known.update({"centre": None, "random": None})
    validate_checks(checks, methods=methods_known, metrics=measurable(kinds, faith), classes=dataset.classes,
                    has_baseline=baseline is not None,
                    why_no_metric=f" (the data has {', '.join(sorted(kinds)) or 'no annotations'}"
                                  f"{'' if faith else '; faithfulness metrics need --faithfulness'})")
    if baseline is not None and not cfg.allow_different_data:
        from .identity import check_same_data, dataset_identity

        rows = [{"id": r.id, "label": r.label, "label_name": r.label_name} for r in dataset.records]
        check_same_data(baseline.data, {"settings": {"data_identity": dataset_identity(dataset), "target": target.kind,
                                                     "preprocessing": pre.to_dict(), "mask_classes": cfg.mask_classes,
                                                     "score_size": cfg.score_size},
                                        "rows": rows},
                        names=("--baseline", "this run"))
    return Setup(dataset, loaded, method_objs, skipped, pre, target, checks, gate, baseline, faith, plan)


def annotation_kinds(records: Sequence[Any]) -> set[str]:
    """Which kinds of reference the records hold: ``"boxes"``, ``"fixations"``, ``"gaze"``."""
    kinds = set()
    for r in records:
        if r.boxes:
            kinds.add("boxes")
        if r.fixations:
            kinds.add("fixations")
        if r.gaze is not None:
            kinds.add("gaze")
        if getattr(r, "mask", None) is not None:
            kinds.add("boxes")
    return kinds


def measurable(kinds: set[str], faith: Any) -> set[str]:
    """The metric names an audit with these annotations and faithfulness checks can produce."""
    from .metrics import BOX_METRICS, DENSITY_METRICS, FIXATION_METRICS

    table = {"boxes": BOX_METRICS, "fixations": FIXATION_METRICS, "gaze": DENSITY_METRICS}
    out = {m for k in kinds for m in table[k]}
    if faith is not None:
        from .faithfulness import CHECKS

        out |= {m for c in faith.checks for m in CHECKS[c]}
    return out


def skipped_methods(model: torch.nn.Module, methods: Sequence[Any], *, episodes: bool) -> dict[str, str]:
    """Methods that will produce no maps in this run, with the reason."""
    out = {}
    for m in methods:
        try:
            m.check(model)
            if m.needs_support and not episodes:
                out[m.name] = "it needs few-shot support images: run few-shot episodes (--episodes N)"
        except AuditorError as e:
            out[m.name] = str(e)
    return out

