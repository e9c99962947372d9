"""Few-shot episodes in ``auditor run``: each query explained and classified as the model decides.

A few-shot backbone (FewTURE and its fork: headless, no class logits) classifies a query by
comparing its tokens with the support images of the episode's ``n_way`` classes. An audit of
such a model must use the same support set and the same classifier the decision used, so
``auditor run --episodes``:

- draws ``episodes`` N-way K-shot episodes (:func:`auditor.data.sample_episodes`, seeded)
  from the data set (FewTURE layout: one split, ``--split``, default ``test``);
- runs one no-grad forward of the episode's support images (all classes) and fits the
  episode's classifier (:mod:`auditor.few_shot`; FewTURE's PEIV step, if asked for, here);
- runs, per class, one pass over that class's ``n_query`` queries with its ``k_shot``
  support images appended: ``reconstruction_attention`` reads the query <-> support
  reconstruction, and the gradient methods explain the target (below);
- predicts each query's class with the same classifier, among the episode's classes, and
  reports the episodes' accuracy (mean, 95% CI of a bootstrap over episodes).

Targets (``--target``): ``fewture`` (default): FewTURE's logit of the query's true class
(patch-token cosine / temperature, logsumexp; :class:`~auditor.few_shot.FewShotClassifier`),
predictions are FewTURE's (``prediction_score``: the softmax probability over the episode's
classes). The raw logit is explained, as Grad-CAM explains a class logit before the softmax; it
depends on the query's own tokens and its class's support (plus PEIV's ``v``, fitted on the
whole support set). ``prototype``: the cosine of the query's mean patch token with the mean of
its class's support images' (this project's earlier stand-in; predictions: the nearest
prototype). ``label``: a model's class head, among the episode's classes only.

Rows are the queries, one per episode they appear in (id ``ep<k>/<image id>``), with
``episode``, ``record_id`` (the data set's id) and ``support`` (the support image ids
used). A support image that cannot be read is left out of its class's support set (and
named in the queries' rows; FewTURE then aggregates over the class's remaining tokens); a
class with no readable support image gives its queries an error row, and the episode no
prediction (it would not be an N-way decision; PEIV is then fitted on the other classes). A
class whose queries all fail still competes: its support images are in the classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .batches import Item, base_row, fill_rows
from .data import Dataset, Episode, Record, sample_episodes
from .errors import UsageError
from .few_shot import DEFAULT_TEMPERATURE, PEIV, ClassLogitTarget, FewShotClassifier
from .methods import compute_maps
from .methods.engine import FINAL_TOKENS
from .metrics.bootstrap import cluster_bootstrap_ci, cluster_bootstrap_cis
from .savers import MapWriter
from .target import Target

#: ``--target`` in episodes -> results.json's ``few_shot.decision``
DECISIONS = {"fewture": "fewture", "prototype": "nearest prototype", "label": "class head"}
#: how every few-shot CI is bootstrapped (:func:`auditor.metrics.stats.cluster_bootstrap_ci`)
CI_METHOD = "pigeonhole bootstrap over episodes x query images"


@dataclass(frozen=True)
class EpisodeOptions:
    """N-way K-shot episodes with ``n_query`` queries per class (FewTURE's test default: 15).

    ``peiv``: run FewTURE's online patch-importance step (``peiv_steps`` SGD steps, lr
    ``peiv_lr``: the fork's defaults). ``temperature``: FewTURE's similarity temperature; None
    takes the checkpoint's ``temp_sim``, else the fork's default (:func:`plan_episodes`).
    """

    n_way: int = 5
    k_shot: int = 5
    n_query: int = 15
    episodes: int = 10
    seed: int = 0
    peiv: bool = False
    peiv_steps: int = PEIV.steps
    peiv_lr: float = PEIV.lr
    temperature: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpisodePlan:
    """``queries``: every episode's query records, episode by episode (the run's rows, in
    order); ``units``: per episode, its queries then its support records (one unit of work);
    ``classifier``: the episodes' decision (None: a class head decides)."""

    options: EpisodeOptions
    episodes: list[Episode]
    queries: list[Record]
    units: list[list[Record]]
    classifier: FewShotClassifier | None = None
    temperature_source: str | None = None

    @property
    def unit_size(self) -> int:
        """Queries per episode: the run's batch size for resuming."""
        return self.options.n_way * self.options.n_query

    def settings(self, target: str) -> dict[str, Any]:
        """The options and the decision, as results.json's ``few_shot`` and the resume fingerprint record them."""
        out: dict[str, Any] = {**self.options.to_dict(), "decision": DECISIONS[target]}
        if self.classifier is not None:
            out["classifier"] = {**self.classifier.to_dict(),
                                 **({"temperature_source": self.temperature_source} if target == "fewture" else {})}
        return out


def episode_id(k: int, record_id: str) -> str:
    return f"ep{k}/{record_id}"


def checkpoint_temperature(path: str | Path, *, trust: bool = False) -> float | None:
    """A FewTURE checkpoint's ``temp_sim`` (``dict(params=..., temp_sim=...)``, train_metatrain_FewTURE.py
    l. 612-614 of the fork), or None (not there, or a safetensors file)."""
    from .models._checkpoint import _read_file

    path = Path(path)
    if path.suffix == ".safetensors":
        return None
    raw = _read_file(path, trust=trust)
    value = raw.get("temp_sim") if isinstance(raw, dict) else None
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (t > 0 and np.isfinite(t)):
        raise UsageError(f"{path}: its temp_sim {value!r} is not a positive temperature; pass the temperature "
                         "explicitly (EpisodeOptions(temperature=...))")
    return t


def plan_episodes(dataset: Dataset, options: EpisodeOptions, *, target: str = "fewture",
                  checkpoint: str | Path | None = None, trust: bool = False) -> EpisodePlan:
    """Draw the episodes and set up the decision ``target`` (``fewture``: temperature from
    ``options``, else ``checkpoint``'s ``temp_sim``, else the fork's default); raises
    :class:`~auditor.errors.DataError` when the data cannot hold the episodes."""
    episodes = sample_episodes(dataset, n_way=options.n_way, k_shot=options.k_shot, n_query=options.n_query,
                               episodes=options.episodes, seed=options.seed)
    units, queries = [], []
    for k, ep in enumerate(episodes):
        q = [replace(r, id=episode_id(k, r.id)) for r in ep.query]
        queries += q
        units.append(q + list(ep.support))
    classifier, source = None, None
    if target == "fewture":
        temperature, source = options.temperature, "given"
        if temperature is None and checkpoint is not None:
            temperature, source = checkpoint_temperature(checkpoint, trust=trust), "checkpoint temp_sim"
        if temperature is None:
            temperature, source = DEFAULT_TEMPERATURE, "the fork's default (--similarity_temp)"
        options = replace(options, temperature=temperature)
        peiv = PEIV(steps=options.peiv_steps, lr=options.peiv_lr) if options.peiv else None
        try:
            classifier = FewShotClassifier("fewture", temperature, peiv)
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif options.peiv:
        raise UsageError(f"--peiv is FewTURE's online step: it applies to --target fewture, not {target}")
    elif target == "prototype":
        classifier = FewShotClassifier("prototype")
    return EpisodePlan(options, episodes, queries, units, classifier, source)


def check_model(model: nn.Module, target: str) -> None:
    """Refuse a model the token targets cannot read before any image is decoded."""
    if target in ("prototype", "fewture") and FINAL_TOKENS not in dict(model.named_modules()):
        raise UsageError(f"--episodes explains the {target} target, which reads the final tokens from the model's "
                         f"'{FINAL_TOKENS}' layer; {type(model).__name__} has none (a ViT-style backbone is needed), "
                         "or pass --target label to explain the class head within the episodes")


def process_episode(k: int, episode: Episode, items: list[Item], model: nn.Module, methods, *, target: Target,
                    device: torch.device, writer: MapWriter | None, amp: bool = False,
                    classifier: FewShotClassifier | None = None, score_size: int | None = None) -> list[dict[str, Any]]:
    """Rows of episode ``k``'s queries (``items``: its queries then its support images, decoded).

    ``target``: ``"fewture"`` (``classifier``'s logit of the true class; its predictions,
    default classifier :class:`~auditor.few_shot.FewShotClassifier`), ``"prototype"`` (the
    nearest prototype), or ``"label"`` for a model with a class head (its logit for the
    true class; predictions among the episode's classes).
    """
    nq = len(episode.query)
    queries, support = items[:nq], items[nq:]
    rows = {id(it): {**base_row(it), "episode": k, "record_id": record.id, "support": []}
            for it, record in zip(queries, episode.query)}
    good = {c: [it for it in support if it.record.label == c and it.error is None] for c in episode.classes}
    fitted = None
    have = [c for c in episode.classes if good[c]]
    tk = target.kind
    if tk == "fewture" and have:  # every class's support tokens: one forward, no gradients
        xs = torch.stack([it.inputs for c in have for it in good[c]]).to(device)
        tokens = support_tokens(model, xs, amp=amp).split([len(good[c]) for c in have])
        fitted = (classifier or FewShotClassifier()).fit(list(tokens))
    kind, means, protos, values = None, {}, {}, {}
    for c in episode.classes:
        q = [it for it in queries if it.record.label == c and it.error is None]
        s = [it for it in support if it.record.label == c]
        for it in q:
            rows[id(it)]["support"] = [x.record.id for x in good[c]]
            if len(good[c]) < len(s):
                rows[id(it)]["support_errors"] = [x.error for x in s if x.error]
        if not good[c]:
            for it in q:
                rows[id(it)]["error"] = (f"episode {k}: no support image of class {it.record.label_name!r} could be "
                                         f"read ({s[0].error})")
            continue
        xs = torch.stack([it.inputs for it in good[c]]).to(device)
        if not q:  # no query to explain, but the class still competes in the episode's decision
            if tk == "prototype":
                protos[c] = support_tokens(model, xs, amp=amp).mean((0, 1)).cpu()
            continue
        x = torch.stack([it.inputs for it in q]).to(device)
        spec = (ClassLogitTarget(fitted, have.index(c)) if tk == "fewture" else
                target.engine_spec([it.record for it in q]))
        res = compute_maps(model, x, methods, target=spec, support=xs, amp=amp)
        kind = kind or res.target_kind
        fill_rows(q, res, rows, methods, writer, target=target, class_output=False,  # predictions: the N-way
                  score_size=score_size)  # decision below
        if res.target_kind in ("prototype", "fewture"):
            for it in q:
                rows[id(it)]["target"], rows[id(it)]["target_name"] = c, it.record.label_name
        if "patch_tokens" in res.info:
            values.update({id(it): res.info["patch_tokens"][i] for i, it in enumerate(q)})
        elif "mean_patch_tokens" in res.info:
            tokens = res.info["mean_patch_tokens"]
            protos[c] = tokens[len(q):].mean(0)
            means.update({id(it): tokens[i] for i, it in enumerate(q)})
        else:
            values.update({id(it): res.output[i] for i, it in enumerate(q)})
    # the N-way decision, among the episode's classes only. Without every class's support
    # (one had no readable support image) it would not be N-way: no prediction in that episode.
    if kind == "fewture" and len(have) == len(episode.classes) and values:
        logits = fitted.logits(torch.stack(list(values.values())).to(fitted.tokens.device)).softmax(-1).cpu()
        _decide(rows, dict(zip(values, logits)), episode.classes, lambda p: p, target.dataset_classes)
    elif kind == "prototype" and all(c in protos for c in episode.classes):
        p = torch.stack([protos[c] for c in episode.classes])
        _decide(rows, means, episode.classes, lambda m: F.cosine_similarity(m[None], p, dim=-1),
                target.dataset_classes)
    elif kind is not None and kind not in ("prototype", "fewture"):  # a class head, renormalised over the N classes
        heads = [target.model_index(c) for c in episode.classes]  # the classes' own logits, mapped by name
        _decide(rows, values, episode.classes, lambda z: z[heads].softmax(-1), target.dataset_classes)
    return [rows[id(it)] for it in queries]


def _decide(rows: dict[int, dict], values: dict[int, torch.Tensor], classes: Sequence[int], scores,
            names: Sequence[str]) -> None:
    """Each query's prediction: the episode class with the highest score (probability, or cosine)."""
    for key, v in values.items():
        s = scores(v)
        c = classes[int(s.argmax())]  # a data-set class: the N-way decision
        rows[key]["prediction"], rows[key]["prediction_name"] = c, names[c] if 0 <= c < len(names) else None
        rows[key]["prediction_score"] = float(s.max())


def support_tokens(model: nn.Module, support: torch.Tensor, *, amp: bool = False) -> torch.Tensor:
    """``[S, N, C]``: the support images' final patch tokens (float32, no gradients)."""
    from .methods.base import Recorder, Recording
    from .methods.engine import amp_dtype

    rec = Recording(model=model, inputs=support)
    with Recorder(model, rec, attention=False, activations=[], captures=[FINAL_TOKENS]), torch.no_grad(), \
            torch.autocast(support.device.type, dtype=amp_dtype(support.device), enabled=amp):
        model(support)
    return rec.captured[FINAL_TOKENS].float()[:, int(getattr(model, "num_prefix_tokens", 1)):]


def _clusters(rows: Sequence[dict[str, Any]]) -> tuple[list[int], list[str]]:
    return [r["episode"] for r in rows], [str(r.get("record_id")) for r in rows]


def episode_summaries(rows: Iterable[dict[str, Any]], *, seed: int = 0, by: str | None = None,
                      layers: bool = False) -> dict[str, Any]:
    """The summaries of episode rows, each CI a bootstrap of whole episodes and query images
    (:data:`CI_METHOD`), never of rows as independent: ``summary[method][metric]`` (``by=
    "label_name"``: per class name first, as ``per_class``; ``layers``: ``per_layer[method][metric]``,
    a list with one summary per layer)."""
    groups: dict[str, dict[str, dict[str, list[list]]]] = {}
    for r in rows:
        if r.get("error") or (by and r.get(by) is None):
            continue
        g = groups.setdefault(str(r[by]) if by else "", {})
        for method, mets in (r.get("per_layer" if layers else "metrics") or {}).items():
            for metric, v in mets.items():
                vs = v if layers else [v]
                cols = g.setdefault(method, {}).setdefault(metric, [[] for _ in vs])
                for col, x in zip(cols, vs):
                    col.append((np.nan if x is None else float(x), r["episode"], str(r.get("record_id"))))

    cis = _cluster_cis([c for g in groups.values() for mets in g.values() for cols in mets.values() for c in cols],
                       seed)

    def ci(col: list) -> dict[str, Any]:
        return cis[id(col)]

    out = {name: {m: {k: [ci(c) for c in cols] if layers else ci(cols[0]) for k, cols in sorted(mets.items())
                      if not layers or any(np.isfinite([v for v, _, _ in c]).any() for c in cols)}
                  for m, mets in g.items()} for name, g in sorted(groups.items())}
    if layers:
        out = {name: {m: mets for m, mets in g.items() if mets} for name, g in out.items()}
    return out if by else out.get("", {})


def _cluster_cis(cols: list[list[tuple]], seed: int) -> dict[int, dict[str, Any]]:
    """Each column's (``[(value, episode, image)]``) summary, keyed by ``id(column)``: the
    columns of the same rows in one :func:`~auditor.metrics.bootstrap.cluster_bootstrap_cis`
    call (they share their draws; the values are each column's :func:`cluster_bootstrap_ci`)."""
    by_rows: dict[tuple, list[tuple[int, tuple]]] = {}
    for col in cols:
        values, episodes, images = zip(*col)
        by_rows.setdefault((episodes, images), []).append((id(col), values))
    out = {}
    for (episodes, images), members in by_rows.items():
        summaries = cluster_bootstrap_cis([values for _, values in members], episodes, images, seed=seed)
        out.update((key, s.to_dict()) for (key, _), s in zip(members, summaries))
    return out


def few_shot_summary(rows: Sequence[dict[str, Any]] | Any, plan: EpisodePlan, class_names: Sequence[str], *,
                     target: str, seed: int = 0) -> dict[str, Any]:
    """results.json's ``few_shot``: the settings (:meth:`EpisodePlan.settings`: ``decision``
    says whose predictions they are), and accuracy per episode (scored queries only) with
    its mean over the episodes (as FewTURE reports it) and a 95% CI of a bootstrap over
    episodes x query images (:data:`CI_METHOD`)."""
    scored = [r for r in rows
              if r.get("episode") is not None and not r.get("error") and r.get("prediction") is not None]
    hits: dict[int, list[bool]] = {}
    for r in scored:
        hits.setdefault(r["episode"], []).append(r["prediction"] == r["label"])
    per_episode = []
    for k, ep in enumerate(plan.episodes):
        h = hits.get(k, [])
        per_episode.append({"episode": k, "classes": [class_names[c] if 0 <= c < len(class_names) else str(c)
                                                      for c in ep.classes],
                            "queries": len(h), "accuracy": float(np.mean(h)) if h else None})
    acc = cluster_bootstrap_ci([r["prediction"] == r["label"] for r in scored], *_clusters(scored),
                               weights=[1 / len(hits[r["episode"]]) for r in scored], seed=seed).to_dict()
    accuracy = {**acc, "n": len(hits), "n_queries": acc["n"], "n_images": len({r.get("record_id") for r in scored}),
                "ci_method": CI_METHOD}
    return {**plan.settings(target), "accuracy": accuracy, "per_episode": per_episode}
