"""Few-shot classifiers of an episode: FewTURE's patch-token classifier, and the mean-token prototype.

FewTURE (Hiller et al., "Rethinking Generalization in Few-Shot Classification", NeurIPS 2022)
classifies a query by comparing every one of its patch tokens with every patch token of the
episode's support images. :class:`FewShotClassifier` computes its logits as the users' fork
does -- github.com/dinhmanhhai/FewTURE-HaiDM, ``eval_FewTURE.py`` at commit
``3e1c78e1856df172b3c26bf6871152a00c3314cb`` (:data:`FORK`); line numbers below are that file's:

1. ``C = cos(s, q)`` for every support token ``s`` and query token ``q`` (``compute_emb_cosine_similarity``,
   l. 135-156: tokens divided by ``max(norm, 1e-8)``, then one matrix product).
2. Optionally add the patch-embedding importance vector ``v`` (PEIV, one value per support
   token, l. 205); ``v = 0`` without the online step.
3. Divide by the temperature ``tau`` (l. 213: ``exp(log tau)`` with a float64 ``log tau``, so
   the logits are float64, as here), then ``logsumexp`` over all (support token of class
   ``c``, query token) pairs (l. 206-215): the logit of class ``c`` is
   ``logsumexp_{s in c, q}((C[s, q] + v[s]) / tau)``.

``tau`` is the checkpoint's ``temp_sim`` (saved by ``train_metatrain_FewTURE.py`` l. 612-614
beside ``params``, read by ``eval_FewTURE.py`` l. 290-293), else the fork's default
:data:`DEFAULT_TEMPERATURE` (l. 72). The PEIV step (``PatchFSL._optimise_peiv``, l. 219-231;
on by default in the fork, off with ``--disable_peiv_optimisation True``) fits ``v`` on the
support set alone: ``steps`` SGD steps (lr ``lr``) of the cross-entropy of the support images'
own logits, with each support image's tokens masked from classifying themselves (:func:`block_mask`).

The prototype classifier (``decision="prototype"``) is this project's earlier stand-in: the
cosine similarity of the query's mean patch token with the mean of its class's support images'
mean patch tokens. It is not FewTURE's decision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FORK = "github.com/dinhmanhhai/FewTURE-HaiDM@3e1c78e1856df172b3c26bf6871152a00c3314cb"
#: ``--similarity_temp``'s default in the fork (eval_FewTURE.py l. 72)
DEFAULT_TEMPERATURE = 0.051031036307982884
DECISIONS = ("fewture", "prototype")
_CHUNK = 1 << 24  # similarities computed at once (64 MiB of float32): queries go through in chunks


@dataclass(frozen=True)
class PEIV:
    """The fork's online step (eval_FewTURE.py l. 69-86 defaults): SGD, 15 steps, lr 0.1; in
    1-shot episodes tokens within ``block_mask_1shot`` positions of each other are masked."""

    steps: int = 15
    lr: float = 0.1
    block_mask_1shot: int = 5


def patch_cosine(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``[S * N, Q * M]`` cosine similarities of support tokens ``[S, N, C]`` with query tokens ``[Q, M, C]``.

    Rows are support images then their tokens, columns query images then their tokens
    (eval_FewTURE.py l. 135-156; norms clamped at 1e-8).
    """
    s = support.reshape(-1, support.shape[-1])
    q = query.reshape(-1, query.shape[-1])
    s = s / torch.clamp(torch.linalg.vector_norm(s, dim=1, keepdim=True), min=1e-8)
    q = q / torch.clamp(q.norm(dim=1, keepdim=True), min=1e-8)
    return s @ q.T


def _tau(temperature: float) -> torch.Tensor:
    """The fork's temperature tensor ``[1]``: ``exp(log tau)`` in float64 (l. 175: ``torch.tensor`` of
    ``np.log``'s float64), so that dividing by it turns the float32 similarities into float64 (l. 213)."""
    return torch.exp(torch.tensor([math.log(temperature)], dtype=torch.float64))


def aggregate(sim: torch.Tensor, counts: Sequence[int], num_queries: int, temperature: float) -> torch.Tensor:
    """``[Q, n_way]`` logits from similarities ``[S * N, Q * M]`` (+ PEIV, mask) of class-major support.

    ``counts``: support images per class, in the rows' order. Class ``c``'s logit of query
    ``i`` is the ``logsumexp`` of ``sim / tau`` over class ``c``'s rows and query ``i``'s
    columns (l. 206-215; the fork reshapes them into one axis first, which changes nothing but
    the float64 summation order).
    """
    n_tokens = sim.shape[0] // sum(counts)
    per_query = sim.view(sim.shape[0], num_queries, -1)  # [S * N, Q, M]
    tau = _tau(temperature).to(sim.device)
    bounds = np.cumsum([0] + [k * n_tokens for k in counts])  # class c: rows bounds[c]:bounds[c + 1]
    return torch.stack([torch.logsumexp(per_query[a:b] / tau, dim=(0, 2)) for a, b in zip(bounds[:-1], bounds[1:])],
                       dim=1)


def block_mask(counts: Sequence[int], n_tokens: int, width: int) -> torch.Tensor:
    """``[S * N, S * N]`` additive mask of the adaptation step (eval_FewTURE.py l. 163-171).

    More than one support image per class: -100 on each image's own ``N x N`` block (an
    image never classifies itself). One per class: -100 within ``width`` positions of the
    diagonal (``|i - j| < width``) of the whole matrix, as the fork does.
    """
    total = sum(counts) * n_tokens
    if max(counts) > 1:
        return torch.block_diag(*[torch.ones(n_tokens, n_tokens) * -100.0 for _ in range(sum(counts))])
    ones = torch.ones(total, total)
    return (ones - ones.triu(diagonal=width) - ones.tril(diagonal=-width)) * -100.0


def optimise_peiv(support: torch.Tensor, counts: Sequence[int], *, temperature: float, peiv: PEIV) -> torch.Tensor:
    """``v`` ``[S * N]`` fitted on the support tokens ``[S, N, C]`` (class-major, ``counts`` per class).

    From zeros, ``peiv.steps`` steps of ``torch.optim.SGD(lr=peiv.lr)`` on the cross-entropy
    of the support images' logits (support against itself, :func:`block_mask` added), as
    ``PatchFSL._optimise_peiv`` (l. 219-231).
    """
    support = support.detach().float()
    n_tokens = support.shape[1]
    sim = patch_cosine(support, support) + block_mask(counts, n_tokens, peiv.block_mask_1shot).to(support.device)
    labels = torch.repeat_interleave(torch.arange(len(counts), device=support.device),
                                     torch.as_tensor(list(counts), device=support.device))
    v = torch.zeros(sim.shape[0], device=support.device, requires_grad=True)
    opt = torch.optim.SGD([v], lr=peiv.lr)
    with torch.enable_grad():
        for _ in range(peiv.steps):
            logits = aggregate(sim + v[:, None], counts, support.shape[0], temperature)
            F.cross_entropy(logits, labels).backward()
            opt.step()
            opt.zero_grad()
    return v.detach()


@dataclass(frozen=True)
class FewShotClassifier:
    """The decision of an episode: ``"fewture"`` (default; ``peiv`` None: the fork's
    ``--disable_peiv_optimisation True``) or ``"prototype"`` (mean-token cosine)."""

    decision: str = "fewture"
    temperature: float = DEFAULT_TEMPERATURE
    peiv: PEIV | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"the similarity temperature must be a positive number, got {self.temperature!r}")

    def fit(self, support: Sequence[torch.Tensor]) -> "FittedSupport":
        """The episode's support: per class (in the episode's order) tokens ``[k_c, N, C]``."""
        counts = [int(s.shape[0]) for s in support]
        tokens = torch.cat([s.detach().float() for s in support])
        v = None
        if self.decision == "fewture" and self.peiv is not None:
            v = optimise_peiv(tokens, counts, temperature=self.temperature, peiv=self.peiv)
        return FittedSupport(self, tokens, counts, v)

    def to_dict(self) -> dict[str, Any]:
        if self.decision == "prototype":
            return {"decision": "prototype", "similarity": "cosine of mean patch tokens"}
        return {"decision": "fewture", "similarity": "patch-token cosine", "aggregation": "logsumexp",
                "temperature": self.temperature, "peiv": asdict(self.peiv) if self.peiv else None, "reference": FORK}


@dataclass
class FittedSupport:
    """An episode's support tokens ``[S, N, C]`` (class-major), ``counts`` per class, and PEIV ``v``."""

    classifier: FewShotClassifier
    tokens: torch.Tensor
    counts: list[int]
    v: torch.Tensor | None = None

    def logits(self, query: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        """``[Q, n]`` logits of query tokens ``[Q, M, C]`` for the classes (indices into the
        episode's classes; default all). Differentiable with respect to ``query``."""
        idx = list(range(len(self.counts))) if classes is None else list(classes)
        if self.classifier.decision == "prototype":
            protos = torch.stack([self._class_rows(self.tokens, c).mean((0, 1)) for c in idx])
            return F.cosine_similarity(query.mean(1)[:, None], protos.to(query)[None], dim=-1)
        support = torch.cat([self._class_rows(self.tokens, c) for c in idx]).to(query)
        v = None if self.v is None else torch.cat([self._class_rows(self.v.view(self.tokens.shape[0], -1), c)
                                                   for c in idx]).reshape(-1, 1).to(query)
        step = max(1, _CHUNK // (support.shape[0] * support.shape[1] * query.shape[1]))  # queries at a time
        out = []
        for chunk in query.split(step):
            sim = patch_cosine(support, chunk)
            out.append(aggregate(sim if v is None else sim + v, [self.counts[c] for c in idx], chunk.shape[0],
                                 self.classifier.temperature))
        return torch.cat(out)

    def _class_rows(self, per_image: torch.Tensor, c: int) -> torch.Tensor:
        start = sum(self.counts[:c])
        return per_image[start:start + self.counts[c]]


@dataclass
class ClassLogitTarget:
    """A token target for :func:`auditor.methods.compute_maps`: each query's logit for class
    ``index`` (position in the episode's classes) under a fitted support set."""

    support: FittedSupport
    index: int

    @property
    def kind(self) -> str:
        return self.support.classifier.decision

    def token_scores(self, tokens: torch.Tensor, num_queries: int, prefix: int) -> torch.Tensor:
        """``[B]`` from the pass's final tokens ``[B + S, P + N, C]`` (queries first)."""
        return self.support.logits(tokens[:num_queries, prefix:], [self.index])[:, 0]
