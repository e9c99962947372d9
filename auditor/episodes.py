"""Few-shot episodes in ``auditor run``: each query explained against its episode's support set.

A few-shot backbone (FewTURE and its fork: headless, no class logits) classifies a query by
comparing its tokens with the support images of the episode's ``n_way`` classes. An audit of
such a model must use the same support set the decision used, so ``auditor run --episodes``:

- draws ``episodes`` N-way K-shot episodes (:func:`auditor.data.sample_episodes`, seeded)
  from the data set (FewTURE layout: one split, ``--split``, default ``test``);
- runs, per episode and class, one pass over that class's ``n_query`` queries with its
  ``k_shot`` support images appended: ``reconstruction_attention`` reads the query <->
  support reconstruction, and the gradient methods explain the ``prototype`` target (cosine
  similarity of the query's mean patch token with the mean of its class's support images);
- predicts each query's class as the nearest prototype (cosine) among the episode's classes,
  from the same pass's tokens, and reports the episodes' accuracy (mean, 95% bootstrap CI).

Rows are the queries, one per episode they appear in (id ``ep<k>/<image id>``), with
``episode``, ``record_id`` (the data set's id) and ``support`` (the support image ids
used). A support image that cannot be read is left out of its class's support set (and
named in the queries' rows); a class with no
readable support image gives its queries an error row, and the episode no prediction (it
would not be an N-way decision). A class whose queries all fail still competes: its
prototype comes from a pass over its support images alone. With ``--target label`` a
model's class head decides instead, among the episode's classes only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .batches import Item, base_row, fill_rows
from .data import Dataset, Episode, Record, sample_episodes
from .errors import UsageError
from .methods import compute_maps
from .methods.engine import FINAL_TOKENS
from .metrics import bootstrap_ci
from .savers import MapWriter
from .target import Target


@dataclass(frozen=True)
class EpisodeOptions:
    """N-way K-shot episodes with ``n_query`` queries per class (FewTURE's test default: 15)."""

    n_way: int = 5
    k_shot: int = 5
    n_query: int = 15
    episodes: int = 10
    seed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class EpisodePlan:
    """``queries``: every episode's query records, episode by episode (the run's rows, in
    order); ``units``: per episode, its queries then its support records (one unit of work)."""

    options: EpisodeOptions
    episodes: list[Episode]
    queries: list[Record]
    units: list[list[Record]]

    @property
    def unit_size(self) -> int:
        """Queries per episode: the run's batch size for resuming."""
        return self.options.n_way * self.options.n_query


def episode_id(k: int, record_id: str) -> str:
    return f"ep{k}/{record_id}"


def plan_episodes(dataset: Dataset, options: EpisodeOptions) -> EpisodePlan:
    """Draw the episodes; raises :class:`~auditor.errors.DataError` when the data cannot hold them."""
    episodes = sample_episodes(dataset, n_way=options.n_way, k_shot=options.k_shot, n_query=options.n_query,
                               episodes=options.episodes, seed=options.seed)
    units, queries = [], []
    for k, ep in enumerate(episodes):
        q = [replace(r, id=episode_id(k, r.id)) for r in ep.query]
        queries += q
        units.append(q + list(ep.support))
    return EpisodePlan(options, episodes, queries, units)


def check_model(model: nn.Module, target: str) -> None:
    """Refuse a model the prototype target cannot read before any image is decoded."""
    if target == "prototype" and FINAL_TOKENS not in dict(model.named_modules()):
        raise UsageError(f"--episodes explains the prototype target, which reads the final tokens from the model's "
                         f"'{FINAL_TOKENS}' layer; {type(model).__name__} has none (a ViT-style backbone is needed), "
                         "or pass --target label to explain the class head within the episodes")


def process_episode(k: int, episode: Episode, items: list[Item], model: nn.Module, methods, *, target: Target,
                    device: torch.device, writer: MapWriter | None, amp: bool = False) -> list[dict[str, Any]]:
    """Rows of episode ``k``'s queries (``items``: its queries then its support images, decoded).

    ``target``: ``"prototype"`` (the few-shot decision; predictions are the nearest
    prototype), or ``"label"`` for a model with a class head (its logit for the true class;
    predictions among the episode's classes).
    """
    nq = len(episode.query)
    queries, support = items[:nq], items[nq:]
    rows = {id(it): {**base_row(it), "episode": k, "record_id": record.id, "support": []}
            for it, record in zip(queries, episode.query)}
    kind, means, protos, logits = None, {}, {}, {}
    proto_target = target.kind == "prototype"
    for c in episode.classes:
        q = [it for it in queries if it.record.label == c and it.error is None]
        s = [it for it in support if it.record.label == c]
        good = [it for it in s if it.error is None]
        for it in q:
            rows[id(it)]["support"] = [x.record.id for x in good]
            if len(good) < len(s):
                rows[id(it)]["support_errors"] = [x.error for x in s if x.error]
        if not good:
            for it in q:
                rows[id(it)]["error"] = (f"episode {k}: no support image of class {it.record.label_name!r} could be "
                                         f"read ({s[0].error})")
            continue
        xs = torch.stack([it.inputs for it in good]).to(device)
        if not q:  # no query to explain, but the class still competes in the episode's decision
            if proto_target:
                protos[c] = support_prototype(model, xs, amp=amp)
            continue
        x = torch.stack([it.inputs for it in q]).to(device)
        res = compute_maps(model, x, methods, target=target.engine_spec([it.record for it in q]), support=xs, amp=amp)
        kind = kind or res.target_kind
        fill_rows(q, res, rows, methods, writer, target=target, class_output=False)  # predictions: the N-way decision below
        if "mean_patch_tokens" in res.info:
            tokens = res.info["mean_patch_tokens"]
            protos[c] = tokens[len(q):].mean(0)
            means.update({id(it): tokens[i] for i, it in enumerate(q)})
        if res.target_kind == "prototype":
            for it in q:
                rows[id(it)]["target"], rows[id(it)]["target_name"] = c, it.record.label_name
        else:
            logits.update({id(it): res.output[i] for i, it in enumerate(q)})
    # the N-way decision, among the episode's classes only. Without a prototype for every class
    # (one had no readable support image) it would not be N-way: no prediction in that episode.
    if kind == "prototype" and all(c in protos for c in episode.classes):
        p = torch.stack([protos[c] for c in episode.classes])
        _decide(rows, means, episode.classes, lambda m: F.cosine_similarity(m[None], p, dim=-1),
                target.dataset_classes)
    elif kind is not None and kind != "prototype":  # a class head: its probabilities renormalised over the N classes
        heads = [target.model_index(c) for c in episode.classes]  # the classes' own logits, mapped by name
        _decide(rows, logits, episode.classes, lambda z: z[heads].softmax(-1), target.dataset_classes)
    return [rows[id(it)] for it in queries]


def _decide(rows: dict[int, dict], values: dict[int, torch.Tensor], classes: Sequence[int], scores,
            names: Sequence[str]) -> None:
    """Each query's prediction: the episode class with the highest score (cosine, or probability)."""
    for key, v in values.items():
        s = scores(v)
        c = classes[int(s.argmax())]  # a data-set class: the N-way decision
        rows[key]["prediction"], rows[key]["prediction_name"] = c, names[c] if 0 <= c < len(names) else None
        rows[key]["prediction_score"] = float(s.max())


def support_prototype(model: nn.Module, support: torch.Tensor, *, amp: bool = False) -> torch.Tensor:
    """``[C]``: the mean of the support images' mean final patch tokens (no gradients)."""
    from .methods.base import Recorder, Recording
    from .methods.engine import amp_dtype, mean_patch_tokens

    rec = Recording(model=model, inputs=support)
    with Recorder(model, rec, attention=False, activations=[], captures=[FINAL_TOKENS]), torch.no_grad(), \
            torch.autocast(support.device.type, dtype=amp_dtype(support.device), enabled=amp):
        model(support)
    tokens = rec.captured[FINAL_TOKENS].float()
    return mean_patch_tokens(tokens, int(getattr(model, "num_prefix_tokens", 1))).mean(0).cpu()


def few_shot_summary(rows: Sequence[dict[str, Any]] | Any, plan: EpisodePlan, class_names: Sequence[str], *,
                     target: str, seed: int = 0) -> dict[str, Any]:
    """results.json's ``few_shot``: the settings, and accuracy per episode (scored queries
    only) with its mean and 95% bootstrap CI over the episodes. ``decision`` says whose
    predictions they are: the nearest prototype (target ``prototype``) or the class head."""
    hits: dict[int, list[bool]] = {}
    for r in rows:
        if r.get("episode") is not None and not r.get("error") and r.get("prediction") is not None:
            hits.setdefault(r["episode"], []).append(r["prediction"] == r["label"])
    per_episode = []
    for k, ep in enumerate(plan.episodes):
        h = hits.get(k, [])
        per_episode.append({"episode": k, "classes": [class_names[c] if 0 <= c < len(class_names) else str(c)
                                                      for c in ep.classes],
                            "queries": len(h), "accuracy": float(np.mean(h)) if h else None})
    accs = np.array([e["accuracy"] for e in per_episode if e["accuracy"] is not None], dtype=float)
    decision = "nearest prototype" if target == "prototype" else "class head"
    return {**plan.options.to_dict(), "decision": decision, "accuracy": bootstrap_ci(accs, seed=seed).to_dict(),
            "per_episode": per_episode}
