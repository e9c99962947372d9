"""The audit pipeline: the one place that ties data, models, methods, metrics and results.

``run_audit`` streams a data set through the model in units of work -- batches, or with
``episodes`` few-shot episodes (:mod:`auditor.episodes`): images are decoded and
annotations checked in background threads, every method's maps come from one pass per
batch (:mod:`auditor.batches`), each map is upsampled to its image, normalised, scored
against the image's boxes / fixations / gaze (and so are the centre and random baselines;
:mod:`auditor.scoring`) in a second thread while the next batch's pass runs, and each
image's row is appended to ``rows.jsonl`` once its batch's maps are on disk. ``engine="ray"``
runs the same per-unit work in a Ray Data actor pool (:mod:`auditor.ray_engine`).
Summaries, threshold verdicts, ``results.json``, ``results.csv`` and ``junit.xml`` are
written at the end, atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .batches import Ready, chunks, local_units, start_batch
from .data import load_dataset
from .episodes import (EpisodeOptions, check_model, episode_summaries, few_shot_summary, plan_episodes,
                       process_episode)
from .errors import AuditorError, DataError, UsageError
from .layers import summarise_layers
from .methods import create_method, list_methods
from .methods.engine import amp_dtype
from .metrics import HIGHER_IS_BETTER
from .models import LoadedModel, build_model, resolve_device
from .io import write_text
from .resume import RUN_FILE, check_fingerprint, fingerprint, resume_point, weights_sha256, write_run_file
from .results import SCHEMA_VERSION, AuditResult, RowsFile, package_versions, write_csv, write_json, write_junit
from .savers import PARTS_DIR, PartedMapWriter
from .scoring import summarise, summarise_per_class
from .thresholds import Check, evaluate, load_thresholds, parse_assignment
from .visualize import input_preprocess

ROWS_FILE = "rows.jsonl"
FAITH_PARTS = ".faithfulness-parts"  # one .npz of curves per batch, merged into results.json at the end


def _prepare_out(out: Path, overwrite: bool, resume: bool = False) -> bool:
    """Make ``out`` ready; True when an interrupted run there is to be resumed."""
    if overwrite and resume:
        raise UsageError("--overwrite and --resume exclude each other: --resume continues the run in --out, "
                         "--overwrite starts it again.")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder.")
    if resume and (out / RUN_FILE).is_file():
        if (out / "results.json").exists() and not (out / PARTS_DIR).exists():
            raise UsageError(f"{out} holds a finished audit (results.json): nothing to resume; "
                             "pass --overwrite to run it again.")
        return True
    if (out / "results.json").exists() or (out / ROWS_FILE).exists() or (out / RUN_FILE).exists():
        if resume:
            raise UsageError(f"Cannot resume: {out} holds results but no {RUN_FILE} (written by an older version, "
                             "or not by `auditor run`); pass --overwrite to start again.")
        if not overwrite:
            raise UsageError(f"{out} already holds an audit's results: pass --overwrite to replace them, "
                             "--resume to finish an interrupted run, or choose another --out.")
        for name in ("results.json", "results.csv", "junit.xml", ROWS_FILE, RUN_FILE, "maps.npz", "token_maps.npz"):
            (out / name).unlink(missing_ok=True)
        PartedMapWriter(out, full=True).cleanup()
    out.mkdir(parents=True, exist_ok=True)
    return False


def run_audit(data: str | Path, *, out: str | Path, arch: str | None = None, factory: str | None = None,
              model: torch.nn.Module | None = None,
              checkpoint: str | Path | None = None, methods: Sequence[str] | None = None,
              thresholds: str | Path | None = None, fail_under: Sequence[str] = (), max_drop: Sequence[str] = (),
              baseline: str | Path | None = None, batch_size: int = 16, save_maps: bool = False,
              device: str = "cpu", image_size: int | tuple[int, int] | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None, target: str | None = None,
              allow_outside_root: bool = False, overwrite: bool = False, trust_checkpoint: bool = False,
              patch_size: int | None = None, model_kwargs: dict[str, Any] | None = None, seed: int = 0,
              progress: Callable[[int, int], None] | None = None, report: bool = False,
              resume: bool = False, faithfulness: str | Sequence[str] | None = None, faithfulness_steps: int = 10,
              faithfulness_baseline: str = "blur", episodes: EpisodeOptions | None = None,
              split: str | None = None, amp: bool = False, engine: str = "local", workers: int = 2) -> AuditResult:
    """Audit every method on a labelled image set; see the module docstring.

    The model is ``arch`` / ``factory`` (+ ``checkpoint``) as on the command line, or an
    ``nn.Module`` passed as ``model``.

    ``resume=True`` finishes an interrupted run in ``out`` (:mod:`auditor.resume`): the
    settings must match the earlier run's (else :class:`~auditor.errors.UsageError`),
    finished batches are kept, and ``results.json`` equals an uninterrupted run's apart
    from ``timing``. With nothing to resume in ``out`` it starts a new run.

    ``report=True`` also writes ``report.html`` (:func:`auditor.report.render_report`).

    ``faithfulness``: checks of :mod:`auditor.faithfulness` to run after each batch's maps
    (``"deletion,insertion,road,randomisation,random_target"`` or ``"all"``; off by default,
    they cost extra forward passes), with ``faithfulness_steps`` and ``faithfulness_baseline``.
    Their per-image values join ``metrics[method]`` (so ``summary[method]`` and thresholds see
    them); the mean curves and the randomisation cascade go to ``results.json``'s ``faithfulness``.

    ``episodes``: few-shot episodes (:mod:`auditor.episodes`): the rows are each episode's
    queries, explained against the episode's support set (``target`` ``"fewture"`` by
    default: FewTURE's own classifier decides and is explained); ``results.json`` gains
    ``few_shot`` (the decision, accuracy per episode); CIs resample episodes and images.
    ``split``: the FewTURE split to read (``train`` / ``val`` / ``test``).
    ``amp``: forward passes under autocast (float16 on CUDA, bfloat16 on the CPU).
    ``engine``: ``"local"`` (in process) or ``"ray"`` (:mod:`auditor.ray_engine`: ``workers``
    Ray Data actors, each holding the model; the same rows and maps as a local run).

    ``target``: ``"label"`` (default), ``"predicted"``, or with ``episodes`` ``"fewture"``
    (the default there) or ``"prototype"`` (mean-token cosine). Headless backbones outside
    episodes explain the CLS-output norm (the mean patch token's norm where the CLS token
    bypasses the blocks).

    Returns an :class:`~auditor.results.AuditResult` (``passed``, ``summary``, ``rows``).
    Raises :class:`~auditor.errors.DataError` (after writing the results) when no image
    could be scored.
    """
    started = time.time()
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine must be 'local' or 'ray', got '{engine}'")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if engine == "ray":  # before anything is written to --out
        from .ray_engine import require_ray

        require_ray()
    target = target or ("fewture" if episodes else "label")
    if target not in ("label", "predicted", "prototype", "fewture"):
        raise UsageError(f"--target must be 'label', 'predicted', 'fewture' or 'prototype', got '{target}'")
    if target in ("prototype", "fewture") and not episodes:
        raise UsageError(f"--target {target} compares each image with its episode's support images: "
                         "it needs few-shot episodes (--episodes N)")
    if episodes and target == "predicted":
        raise UsageError("--target predicted is not available with --episodes: the head's prediction over all "
                         "its classes is not the episode's N-way decision; use --target fewture (the default) "
                         "or --target label (the logit of the query's true class)")
    if episodes and faithfulness:
        raise UsageError("--faithfulness does not run with --episodes yet: its checks re-run the model without "
                         "the episode's support images; run them in a separate audit without --episodes")
    faith = None
    if faithfulness:
        from .faithfulness import FaithfulnessOptions

        faith = FaithfulnessOptions(faithfulness, steps=faithfulness_steps, baseline=faithfulness_baseline, seed=seed)
    checks: list[Check] = load_thresholds(thresholds) if thresholds else []
    checks += [parse_assignment(s, "min") for s in fail_under] + [parse_assignment(s, "max_drop") for s in max_drop]
    base_summary = AuditResult.load(baseline).data["summary"] if baseline else None
    out = Path(out)
    dataset = load_dataset(data, allow_outside_root=allow_outside_root, split=split)
    plan = plan_episodes(dataset, episodes, target=target, checkpoint=checkpoint, trust=trust_checkpoint) \
        if episodes else None
    if model is not None:  # an nn.Module from the caller (the pytest fixture, notebooks)
        loaded = LoadedModel(model.to(resolve_device(device)).eval(), type(model).__name__, None, {})
    else:
        loaded = build_model(arch, factory=factory, checkpoint=checkpoint, patch_size=patch_size,
                             image_size=image_size, device=device, trust_checkpoint=trust_checkpoint,
                             **(model_kwargs or {}))
    model = loaded.model
    names = list(methods) if methods else list_methods()
    method_objs = [create_method(n) for n in names]
    pre = input_preprocess(model, image_size, mean, std)
    headless = getattr(model, "num_classes", None) == 0
    if plan is not None:
        if headless and target not in ("prototype", "fewture"):
            raise UsageError(f"--target {target} needs class logits, but this backbone has no class head; "
                             "in episodes use --target fewture (the default)")
        check_model(model, target)
    resuming = _prepare_out(out, overwrite, resume)
    dev = next(model.parameters()).device
    fp = fingerprint(dataset=dataset, model=loaded.describe(), weights=weights_sha256(model),
                     methods={m.name: {"normalization": m.normalization, **_method_params(m)} for m in method_objs},
                     preprocessing=pre.to_dict(), target=target, seed=seed,
                     batch_size=batch_size if plan is None else None,  # episodes: a pass is one class's images
                     save_maps=save_maps)
    if amp:  # a resumed run must use the same precision
        fp["amp"] = True
    if plan is not None:  # a resumed run must draw the same episodes
        fp["episodes"] = plan.settings(target)
    if faith is not None:  # a resumed run must run the same checks
        fp["faithfulness"] = faith.to_dict()
    faith_dir = out / FAITH_PARTS
    writer = PartedMapWriter(out, full=save_maps)
    records = dataset.records if plan is None else plan.queries
    unit = batch_size if plan is None else plan.unit_size  # queries per unit of work
    units = chunks(records, batch_size) if plan is None else plan.units
    start, done_rows = 0, []
    if resuming:
        check_fingerprint(out, fp)
        start, done_rows = resume_point(out, records, dataset.errors, unit, writer)
    else:
        writer.cleanup()
        shutil.rmtree(faith_dir, ignore_errors=True)
        write_run_file(out, fp)
    if faith is not None:
        faith_dir.mkdir(exist_ok=True)

    write_text(out / ROWS_FILE, "".join(json.dumps(r) + "\n" for r in [_error_row(e) for e in dataset.errors] + done_rows))
    del done_rows  # atomic: a resume keeps its rows; from here on rows live in rows.jsonl only
    with open(out / ROWS_FILE, "a", encoding="utf-8") as rows_file:
        done, target_kind = start, None
        work = UnitWork(model, method_objs, target=target, headless=headless, device=dev, unit=unit, plan=plan,
                        faith=faith, amp=amp)
        if engine == "ray":
            from .ray_engine import run_units

            results = run_units(units, start // unit, pre, work, out, unit_size=unit, full=save_maps, workers=workers,
                                gpu=dev.type == "cuda")
        else:
            results = local_units(units, start // unit, pre, work, writer, out)
        for batch_rows, kind in results:  # each unit's maps are in place before its rows are written
            target_kind = target_kind or kind
            for row in batch_rows:
                rows_file.write(json.dumps(_jsonable(row)) + "\n")
            rows_file.flush()
            done += len(batch_rows)
            if progress:
                progress(done, len(records))
    writer.merge(range(0, len(records), unit))
    if target_kind is None:  # no batch ran here (all errors, or all done before a resume)
        target_kind = "cls-norm" if headless and plan is None else target
    rows = RowsFile(out / ROWS_FILE)  # streamed from disk, never all in memory: peak RSS does not grow with N
    n_rows, n_ok = 0, 0
    for r in rows:
        n_rows, n_ok = n_rows + 1, n_ok + (not r["error"])
    skipped = _skipped(model, method_objs, episodes=plan is not None)
    if plan is None:
        summary = summarise((r for r in rows if not r["error"]), seed=seed)
        per_class = summarise_per_class(rows, seed)
        per_layer = summarise_layers((r for r in rows if not r["error"]), seed=seed)
    else:  # episode rows are not independent: CIs resample episodes and images
        summary, per_class, per_layer = (episode_summaries(rows, seed=seed, **kw)
                                         for kw in ({}, {"by": "label_name"}, {"layers": True}))
    verdicts = [v.to_dict() for v in evaluate(checks, summary, per_class, base_summary, HIGHER_IS_BETTER)]
    data_out = {
        "schema_version": SCHEMA_VERSION,
        "settings": {
            "data": str(data), "classes": dataset.classes, "models": [loaded.describe()],
            "methods": {m.name: {"normalization": m.normalization, **_method_params(m)} for m in method_objs
                        if m.name not in skipped},
            "skipped_methods": skipped, "baselines": ["centre", "random"],
            "preprocessing": pre.to_dict(), "target": target_kind,
            "thresholds": [{"name": c.name, "method": c.method, "metric": c.metric, "kind": c.kind,
                            "threshold": c.threshold, "cls": c.cls} for c in checks],
            "baseline_results": str(baseline) if baseline else None, "seed": seed, "batch_size": batch_size,
            **({"amp": str(amp_dtype(dev)).replace("torch.", "")} if amp else {}),
            **({"split": split} if split else {}),
            "versions": package_versions(),
            **({"faithfulness": faith.to_dict()} if faith is not None else {}),
        },
        "summary": summary, "per_class": per_class, **({"per_layer": per_layer} if per_layer else {}),
        "rows": rows, "verdicts": verdicts,
        "passed": all(v["passed"] for v in verdicts),
        "counts": {"images": n_rows, "ok": n_ok, "errors": n_rows - n_ok},
        "timing": {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                   "seconds": round(time.time() - started, 3)},
    }
    if faith is not None:
        data_out["faithfulness"] = _faithfulness_section(faith, faith_dir, range(0, len(records), unit), seed)
    if plan is not None:
        data_out["few_shot"] = few_shot_summary(rows, plan, dataset.classes, target=target, seed=seed)
    write_json(out / "results.json", data_out)
    write_csv(out / "results.csv", rows)
    write_junit(out / "junit.xml", verdicts)  # no duration: the same run gives the same bytes
    writer.cleanup()
    shutil.rmtree(faith_dir, ignore_errors=True)
    head = {k: v for k, v in data_out.items() if k != "rows"}
    result = AuditResult({**json.loads(json.dumps(_jsonable(head))), "rows": rows}, out)
    if report:  # report.html beside results.json, redrawn from the saved maps
        from .report import render_report

        render_report(result)
    if not n_ok:
        first = next(iter(rows), None)
        raise DataError(f"No image of {data} could be scored ({n_rows} error row(s); the first: "
                        f"{first['error'] if first else 'the data set is empty'}). Results: {out / 'results.json'}")
    return result


@dataclass
class UnitWork:
    """The run's work for one unit (a batch, or a few-shot episode): ``(rows, target kind)``.

    Picklable, so that the Ray engine can hand it (with the model) to its actors. ``part``
    receives the unit's maps; faithfulness curves go to ``root/.faithfulness-parts/``.
    """

    model: torch.nn.Module
    methods: list
    target: str
    headless: bool
    device: torch.device
    unit: int
    plan: Any = None
    faith: Any = None
    amp: bool = False

    def __call__(self, i: int, items: list, part: Any, root: Path) -> tuple[list[dict[str, Any]], str | None]:
        return self.start(i, items, part, root)()

    def start(self, i: int, items: list, part: Any, root: Path) -> Callable[[], tuple[list[dict[str, Any]], str | None]]:
        """Run unit ``i``'s model passes now; the returned function finishes it (the scoring)."""
        if self.plan is not None:
            return Ready(process_episode(i, self.plan.episodes[i], items, self.model, self.methods,
                                         target=self.target, device=self.device, writer=part, amp=self.amp,
                                         classifier=self.plan.classifier))
        faith_part = root / FAITH_PARTS / f"{i * self.unit}.npz"
        if self.faith is not None:
            faith_part.parent.mkdir(parents=True, exist_ok=True)
        return start_batch(items, self.model, self.methods, target=self.target, headless=self.headless,
                           device=self.device, writer=part, faith=self.faith, faith_part=faith_part, amp=self.amp)


def _faithfulness_section(faith: Any, folder: Path, starts: range, seed: int) -> dict[str, Any]:
    """results.json's ``faithfulness``: mean curves and cascade from every batch's part, in order."""
    from .faithfulness import Accumulator, load_part

    acc = Accumulator(faith)
    for start in starts:
        if (folder / f"{start}.npz").is_file():
            acc.add(load_part(folder / f"{start}.npz"))
    return acc.section(seed=seed)


def _skipped(model, methods, *, episodes: bool) -> dict[str, str]:
    """Methods that produced no maps in this run, with the reason."""
    out = {}
    for m in methods:
        try:
            m.check(model)
            if m.needs_support and not episodes:
                out[m.name] = "it needs few-shot support images: run few-shot episodes (--episodes N)"
        except AuditorError as e:
            out[m.name] = str(e)
    return out


def _method_params(m: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, (int, float, str, type(None)))}


def _error_row(e: Any) -> dict[str, Any]:
    return {"id": e.id, "image": None if e.image is None else str(e.image), "label": None, "label_name": None,
            "split": None, "source": e.source, "target": None, "prediction": None, "prediction_score": None,
            "metrics": {}, "map_status": {}, "error": e.reason}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    from .results import clean

    return clean(row)
