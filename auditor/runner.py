"""The audit pipeline: the one place that ties data, models, methods, metrics and results.

``run_audit`` streams a data set through the model in units of work -- batches, or with
``episodes`` few-shot episodes (:mod:`auditor.episodes`): each unit's images are decoded and
annotations checked, every method's maps come from one pass per batch
(:mod:`auditor.batches`), each map is upsampled to its image, normalised and scored against
the image's boxes / fixations / gaze (and so are the centre and random baselines;
:mod:`auditor.scoring`), and each image's row is appended to ``rows.jsonl`` once its batch's
maps are on disk. An engine runs the units (:mod:`auditor.units`): in this process (decoding
threads, scoring overlapped with the next pass), in forked CPU workers
(:mod:`auditor.process_engine`; the default on a CPU for 8 or more units) or in a Ray Data
actor pool (:mod:`auditor.ray_engine`).
Summaries, threshold verdicts, ``results.json``, ``results.csv`` and ``junit.xml`` are
written at the end, atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import maps as maplib
from .batches import chunks
from .config import AuditConfig, Setup, validate
from .episodes import episode_summaries, few_shot_summary
from .errors import DataError, UsageError
from .gate import evaluate
from .identity import dataset_identity
from .io import write_text
from .layers import add_layer_values, layer_summaries
from .methods.engine import amp_dtype
from .process_engine import choose
from .resume import RUN_FILE, check_fingerprint, fingerprint, resume_point, weights_sha256, write_run_file
from .results import (INDEX_FILE, SCHEMA_VERSION, AuditResult, RowsFile, csv_metric_columns, package_versions,
                      row_json, write_csv, write_json, write_junit)
from .savers import PARTS_DIR, PartedMapWriter
from .scoring import add_class_values, add_values, summary_tables
from .units import FAITH_PARTS, UnitWork, engine_units

ROWS_FILE = "rows.jsonl"


def _prepare_out(out: Path, overwrite: bool, resume: bool = False) -> bool:
    """Make ``out`` ready; True when an interrupted run there is to be resumed."""
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"Cannot create --out {out}: {e.strerror or e}; choose a folder you can write to.") from None
    return False


def run_audit(data: str | Path | AuditConfig, **options: Any) -> AuditResult:
    """Audit every method on a labelled image set; see the module docstring.

    ``data`` and ``options`` are the fields of :class:`~auditor.config.AuditConfig` (or pass
    one config as ``data``). The stages: :func:`~auditor.config.validate` (every option,
    threshold and the class map; nothing written) -> plan -> execute -> summarise -> gate ->
    write.

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
    ``few_shot``; CIs resample episodes and images. ``split``: the FewTURE split to read.
    ``amp``: forward passes under autocast (float16 on CUDA, bfloat16 on the CPU).
    ``engine``: ``"auto"`` (default: ``"processes"`` for 8 or more units on a CPU with two or
    more torch threads, else ``"local"``; :func:`auditor.process_engine.choose`), ``"local"``
    (in process, threads), ``"processes"`` (forked CPU workers, :mod:`auditor.process_engine`)
    or ``"ray"`` (:mod:`auditor.ray_engine`); ``workers`` (default: one per torch thread, at
    most 4; Ray: 2).

    ``mask_classes``: which objects form an image's mask for the box metrics: ``"target"``
    (the record's class's boxes, segmentations and mask file) or ``"any"`` (every object;
    :func:`auditor.data.annotations.mask_boxes`).

    ``target``: ``"label"`` (default; mapped to the model's classes by name, ``class_map``),
    ``"predicted"``, or with ``episodes`` ``"fewture"`` (the default there) or ``"prototype"``
    (mean-token cosine) (:mod:`auditor.target`).

    The gate (:mod:`auditor.gate`): thresholds, ``max_nan``, ``max_errors``, ``gate_on``.

    Returns an :class:`~auditor.results.AuditResult` (``passed``, ``summary``, ``rows``).
    Raises :class:`~auditor.errors.DataError` (after writing the results) when no image
    could be scored.
    """
    cfg = data if isinstance(data, AuditConfig) else AuditConfig(data=data, **options)
    started = time.time()
    return run_validated(cfg, validate(cfg), started=started)


def run_validated(cfg: AuditConfig, setup: Setup, *, started: float | None = None) -> AuditResult:
    """The stages after :func:`~auditor.config.validate`: plan -> execute -> summarise -> gate -> write."""
    started = time.time() if started is None else started
    run = _plan(cfg, setup)
    _execute(cfg, setup, run)
    return _finish(cfg, setup, run, started)


@dataclass
class _Run:
    """The plan of one run: its units of work, where it starts, and its fingerprint."""

    out: Path
    records: Sequence[Any]
    unit: int
    units: Sequence[Sequence[Any]]
    fingerprint: dict[str, Any]
    writer: PartedMapWriter
    engine: tuple[str, int] = ("local", 1)  # (name, workers) for the units left: :func:`auditor.process_engine.choose`


def _plan(cfg: AuditConfig, s: Setup) -> _Run:
    """Units of work (batches or episodes), records that cannot be explained, the fingerprint."""
    plan = s.plan
    records = s.dataset.records if plan is None else plan.queries
    unit = cfg.batch_size if plan is None else plan.unit_size  # queries per unit of work
    units = chunks(records, cfg.batch_size) if plan is None else plan.units
    fp = fingerprint(dataset=s.dataset, model=s.loaded.describe(), weights=weights_sha256(s.model),
                     methods=_method_settings(s.methods), preprocessing=s.pre.to_dict(), target=s.target.kind,
                     seed=cfg.seed, batch_size=cfg.batch_size if plan is None else None,  # episodes: a pass is a class
                     save_maps=cfg.save_maps)
    fp["mask_classes"] = cfg.mask_classes
    if cfg.score_size is not None:  # a resumed run must score at the same size
        fp["score_size"] = cfg.score_size
    if s.target.class_map is not None:  # a resumed run must explain the same model classes
        fp["class_map"] = {str(k): v for k, v in s.target.class_map.to_model.items()}
    if cfg.amp:  # a resumed run must use the same precision
        fp["amp"] = True
    if plan is not None:  # a resumed run must draw the same episodes
        fp["episodes"] = plan.settings(s.target.kind)
    if s.faith is not None:  # a resumed run must run the same checks
        fp["faithfulness"] = s.faith.to_dict()
    out = Path(cfg.out)
    choose(cfg.engine, cfg.workers, next(s.model.parameters()).device, len(units))  # refused now, not mid-run
    return _Run(out, records, unit, units, fp, PartedMapWriter(out, full=cfg.save_maps))


def _execute(cfg: AuditConfig, s: Setup, run: _Run) -> None:
    """Run every unit through the engine, appending rows to ``rows.jsonl`` as units finish.

    A fresh run that fails or is interrupted before any unit finished removes what it wrote
    (``run.json``, ``rows.jsonl``), so the same command can simply be run again."""
    out, writer = run.out, run.writer
    resuming = _prepare_out(out, cfg.overwrite, cfg.resume)
    faith_dir = out / FAITH_PARTS
    start, done_rows = 0, []
    if resuming:
        check_fingerprint(out, run.fingerprint)
        start, done_rows = resume_point(out, run.records, s.dataset.errors, run.unit, writer)
    else:
        writer.cleanup()
        shutil.rmtree(faith_dir, ignore_errors=True)
        write_run_file(out, run.fingerprint)
    if s.faith is not None:
        faith_dir.mkdir(exist_ok=True)
    write_text(out / ROWS_FILE, "".join(row_json(r) + "\n" for r in [_error_row(e) for e in s.dataset.errors] + done_rows))
    del done_rows  # atomic: a resume keeps its rows; from here on rows live in rows.jsonl only
    done = start
    dev = next(s.model.parameters()).device
    run.engine = choose(cfg.engine, cfg.workers, dev, len(run.units) - start // run.unit)
    try:
        with open(out / ROWS_FILE, "a", encoding="utf-8") as rows_file:
            work = UnitWork(s.model, s.methods, target=s.target, device=dev, unit=run.unit, plan=s.plan,
                            faith=s.faith, amp=cfg.amp, mask_classes=cfg.mask_classes, score_size=cfg.score_size)
            results = engine_units(run.engine, run.units, start // run.unit, s.pre, work, writer, out,
                                   full=cfg.save_maps, gpu=dev.type == "cuda")
            with closing(results):  # stopped here on any failure: no worker writes under out after this
                for batch_rows in results:  # each unit's maps are in place before its rows are written
                    for row in batch_rows:
                        rows_file.write(row_json(row) + "\n")  # floats to ROW_DIGITS digits
                    rows_file.flush()
                    done += len(batch_rows)
                    if cfg.progress:
                        cfg.progress(done, len(run.records))
    except BaseException:  # a bad input, a bug in a user's model, Ctrl-C
        if not resuming and done == 0:  # nothing finished: leave nothing that blocks a retry
            for name in (RUN_FILE, ROWS_FILE):
                (out / name).unlink(missing_ok=True)
            writer.cleanup()
            shutil.rmtree(faith_dir, ignore_errors=True)
        raise
    writer.merge(range(0, len(run.records), run.unit))


def _finish(cfg: AuditConfig, s: Setup, run: _Run, started: float) -> AuditResult:
    """Summarise -> gate -> write, from the rows on disk (one pass gathers what all three need)."""
    rows = RowsFile(run.out / ROWS_FILE)  # streamed from disk, never all in memory: peak RSS does not grow with N
    scan = _scan(rows, values=s.plan is None)
    data_out = _summarise(cfg, s, run, rows, scan)
    data_out["verdicts"] = _gate(cfg, s, data_out, rows, scan.errors)
    data_out["passed"] = all(v["passed"] for v in data_out["verdicts"])
    data_out["timing"] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                          "seconds": round(time.time() - started, 3)}
    return _write(cfg, run, data_out, rows, scan.columns)


@dataclass
class _Scan:
    """What one pass over a run's rows gathers: their count, the error rows' reasons (for the
    gate), the CSV's metric columns and, unless the rows are few-shot episodes' (summarised by
    :mod:`auditor.episodes`), the scored rows' values for the summaries (8 bytes a value)."""

    n_rows: int = 0
    errors: list[str] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)
    values: dict[str, Any] = field(default_factory=dict)  # method -> metric -> values (scoring.add_values)
    classes: dict[str, Any] = field(default_factory=dict)  # class -> the same (scoring.add_class_values)
    layers: dict[str, Any] = field(default_factory=dict)  # method -> metric -> per layer (layers.add_layer_values)


def _scan(rows: RowsFile, *, values: bool) -> _Scan:
    scan = _Scan()
    for r in rows:
        scan.n_rows += 1
        scan.columns.update(csv_metric_columns(r))
        if r["error"]:
            scan.errors.append(r["error"] if str(r["error"]).startswith(str(r["id"])) else f"{r['id']}: {r['error']}")
        elif values:
            add_values(scan.values, r)
            add_class_values(scan.classes, r)
            add_layer_values(scan.layers, r)
    return scan


def _summarise(cfg: AuditConfig, s: Setup, run: _Run, rows: RowsFile, scan: _Scan) -> dict[str, Any]:
    """results.json without its verdicts: settings, summaries (all, per class, per layer), counts."""
    seed = cfg.seed
    n_rows, n_errors = scan.n_rows, len(scan.errors)
    models = [{**s.loaded.describe(), **({"classes": list(s.target.model.names)}
                                         if s.target.model is not None and s.target.model.names else {})}]
    data_out = {
        "schema_version": SCHEMA_VERSION,
        "settings": {
            "data": str(cfg.data), "classes": s.dataset.classes, "data_identity": dataset_identity(s.dataset),
            "models": models,
            "methods": {k: {**v, "postprocess": maplib.PostProcess.from_mode(v["normalization"]).to_dict()}
                        for k, v in _method_settings(s.methods).items() if k not in s.skipped},
            "skipped_methods": s.skipped, "baselines": ["centre", "random"],
            "preprocessing": s.pre.to_dict(), "target": s.target.kind, "target_detail": s.target.to_dict(),
            "mask_classes": cfg.mask_classes, "score_size": cfg.score_size,
            "thresholds": [{"name": c.name, "method": c.method, "metric": c.metric, "kind": c.kind,
                            "threshold": c.threshold, "cls": c.cls} for c in s.checks],
            "gate": s.gate.to_dict(),
            "baseline_results": str(cfg.baseline) if cfg.baseline else None, "seed": seed,
            "batch_size": cfg.batch_size, "engine": {"name": run.engine[0], "workers": run.engine[1]},
            **({"amp": str(amp_dtype(next(s.model.parameters()).device)).replace("torch.", "")} if cfg.amp else {}),
            **({"split": cfg.split} if cfg.split else {}),
            "versions": package_versions(),
            **({"faithfulness": s.faith.to_dict()} if s.faith is not None else {}),
        },
        "summary": {}, "per_class": {},  # filled below, kept in this place in the file
        "rows": rows, "verdicts": [], "passed": False,
        "counts": {"images": n_rows, "ok": n_rows - n_errors, "errors": n_errors},
    }
    if s.plan is None:  # the CIs of the summary, of all classes and of all layers: columns of a length share draws
        classes = sorted(scan.classes)
        data_out["summary"], *tables = summary_tables([scan.values, *(scan.classes[c] for c in classes)], seed)
        data_out["per_class"] = dict(zip(classes, tables))
        per_layer = layer_summaries(scan.layers, seed=seed)
    else:  # episode rows are not independent: CIs resample episodes and images
        data_out["summary"], data_out["per_class"], per_layer = (
            episode_summaries(rows, seed=seed, **kw) for kw in ({}, {"by": "label_name"}, {"layers": True}))
    if per_layer:
        data_out["per_layer"] = per_layer
    if s.faith is not None:
        data_out["faithfulness"] = _faithfulness_section(s.faith, run.out / FAITH_PARTS,
                                                         range(0, len(run.records), run.unit), seed)
    if s.plan is not None:
        data_out["few_shot"] = few_shot_summary(rows, s.plan, s.dataset.classes, target=s.target.kind, seed=seed)
    return data_out


def _gate(cfg: AuditConfig, s: Setup, data_out: dict[str, Any], rows: RowsFile,
          errors: list[str]) -> list[dict[str, Any]]:
    """The verdicts (:mod:`auditor.gate`): thresholds, paired drops against ``--baseline``, error
    rows (``errors``: their reasons, each starting with the image's id)."""
    return [v.to_dict() for v in evaluate(s.checks, data_out["summary"], data_out["per_class"], options=s.gate,
                                          rows=rows, baseline_rows=s.baseline.rows if s.baseline else None,
                                          errors=errors, seed=cfg.seed)]


def _write(cfg: AuditConfig, run: _Run, data_out: dict[str, Any], rows: RowsFile,
           columns: set[str]) -> AuditResult:
    """results.json, results.csv (``columns``: its metric columns), junit.xml (and report.html),
    atomically; the temporary parts go."""
    out = run.out
    write_json(out / "results.json", data_out)
    write_csv(out / "results.csv", rows, metric_columns=columns)
    write_junit(out / "junit.xml", data_out["verdicts"])  # no duration: the same run gives the same bytes
    run.writer.cleanup()
    shutil.rmtree(out / FAITH_PARTS, ignore_errors=True)
    head = {k: v for k, v in data_out.items() if k != "rows"}
    if (out / INDEX_FILE).is_file():  # rows kept out of results.json: read them through the index
        rows = RowsFile(rows.path, index=out / INDEX_FILE)
    result = AuditResult({**json.loads(json.dumps(_jsonable(head))), "rows": rows}, out)
    if cfg.report:  # report.html beside results.json, redrawn from the saved maps
        from .report import render_report

        render_report(result)
    if not data_out["counts"]["ok"]:
        first = next(iter(rows), None)
        raise DataError(f"No image of {cfg.data} could be scored ({data_out['counts']['images']} error row(s); the "
                        f"first: {first['error'] if first else 'the data set is empty'}). Results: {out / 'results.json'}")
    return result


def _faithfulness_section(faith: Any, folder: Path, starts: range, seed: int) -> dict[str, Any]:
    """results.json's ``faithfulness``: mean curves and cascade from every batch's part, in order."""
    from .faithfulness import Accumulator, load_part

    acc = Accumulator(faith)
    for start in starts:
        if (folder / f"{start}.npz").is_file():
            acc.add(load_part(folder / f"{start}.npz"))
    return acc.section(seed=seed)


def _method_settings(methods: Sequence[Any]) -> dict[str, dict[str, Any]]:
    return {m.name: {"normalization": m.normalization, "cost": m.cost, **_method_params(m)} for m in methods}


def _method_params(m: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, (int, float, str, type(None)))}


def _error_row(e: Any) -> dict[str, Any]:
    return {"id": e.id, "image": None if e.image is None else str(e.image), "label": None, "label_name": None,
            "split": None, "source": e.source, "target": None, "prediction": None, "prediction_score": None,
            "metrics": {}, "map_status": {}, "error": e.reason}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    from .results import clean

    return clean(row)
