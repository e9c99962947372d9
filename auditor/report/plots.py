"""Report plots, drawn once to PNG bytes with matplotlib's Agg canvas (no pyplot state).

Colours are the Okabe-Ito palette (safe for colour-blind readers); the baselines are two greys
(centre dark, random light and hatched). Figures are small single panels (about 420 px wide) so
they stay readable on a phone; the page lays them out side by side on a wide screen.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..results import BASELINES

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
BASELINE_COLOUR = "#999999"
#: the two baselines told apart: centre dark grey, random light grey (hatched in bar charts)
BASELINE_COLOURS = {"centre": "#5F5F5F", "random": "#BBBBBB"}
BASELINE_HATCH = {"random": "///"}
#: metrics whose per-image value is 0 or 1: drawn as a proportion with its interval, not a box plot
BINARY_METRICS = ("pointing_game",)
#: one panel's size in inches at 100 dpi: 420 x 300 px, readable on a 400 px wide phone screen
PANEL = (4.2, 3.0)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def colours(methods: Sequence[str]) -> list[str]:
    out, i = [], 0
    for m in methods:
        if m in BASELINES:
            out.append(BASELINE_COLOURS.get(m, BASELINE_COLOUR))
        else:
            out.append(OKABE_ITO[i % len(OKABE_ITO)])
            i += 1
    return out


def is_binary(metric: str, values: Mapping[str, Sequence[float]]) -> bool:
    """A 0/1 metric: named in :data:`BINARY_METRICS`, or every value is 0 or 1."""
    if metric in BINARY_METRICS:
        return True
    every = [v for vs in values.values() for v in vs]
    return bool(every) and all(v in (0.0, 1.0) for v in every)


def metric_panels(values: Mapping[str, Mapping[str, Sequence[float]]], methods: Sequence[str],
                  metrics: Sequence[str], summary: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
                  ) -> list[tuple[str, bool, bytes]]:
    """One small figure per metric: ``[(metric, binary, png)]``.

    ``values[method][metric]`` = finite per-image values. A binary metric (pointing game) is
    the proportion of hits per method with the summary's 95% CI as an error bar (a box plot
    of 0s and 1s shows nothing); any other metric is a box plot of the per-image values.
    """
    out = []
    summary = summary or {}
    for metric in metrics:
        per_method = {m: values.get(m, {}).get(metric, ()) for m in methods}
        if not any(len(v) for v in per_method.values()):
            continue
        binary = is_binary(metric, per_method)
        fig = _figure(*PANEL)
        ax = fig.add_subplot(1, 1, 1)
        (_proportions if binary else _boxes)(ax, per_method, methods, metric, summary)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{metric}: proportion of hits, 95% CI" if binary else f"{metric}: per-image values", fontsize=10)
        out.append((metric, binary, _png(fig)))
    return out


def _boxes(ax, per_method, methods, metric, summary) -> None:
    cs = colours(methods)
    pos = [j for j, m in enumerate(methods) if len(per_method[m])]
    bp = ax.boxplot([np.asarray(per_method[methods[j]], dtype=float) for j in pos], positions=pos, widths=0.6,
                    patch_artist=True, showfliers=True, flierprops={"markersize": 2})
    for patch, j in zip(bp["boxes"], pos):
        patch.set_facecolor(cs[j])
        patch.set_alpha(0.75)
        patch.set_hatch(BASELINE_HATCH.get(methods[j], ""))


def _proportions(ax, per_method, methods, metric, summary) -> None:
    """Each method's hit rate (a dot) with its 95% CI (summary's, else none), on 0..1."""
    for j, (m, c) in enumerate(zip(methods, colours(methods))):
        vals = np.asarray(per_method[m], dtype=float)
        if not len(vals):
            continue
        st = (summary.get(m) or {}).get(metric) or {}
        mean = float(st["mean"]) if st.get("mean") is not None else float(vals.mean())
        lo, hi = st.get("ci_low"), st.get("ci_high")
        err = None if lo is None or hi is None else [[max(0.0, mean - lo)], [max(0.0, hi - mean)]]
        ax.errorbar([j], [mean], yerr=err, fmt="o", color=c, ms=7, capsize=4, elinewidth=1.5)
        ax.annotate(f"{mean:.2f}", (j, mean), textcoords="offset points", xytext=(7, -3), fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylabel("proportion of images", fontsize=9)


def class_hit_rates(per_class: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]], methods: Sequence[str],
                    metric: str = "pointing_game") -> bytes | None:
    """Grouped bars: ``metric`` mean per class and method, 95% CI as error bars."""
    classes = [c for c in per_class if any(metric in per_class[c].get(m, {}) for m in methods)]
    if not classes:
        return None
    fig = _figure(min(9.0, max(PANEL[0], 1.5 + 0.35 * len(classes) * max(1, len(methods)))), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(methods)
    x = np.arange(len(classes))
    for j, (m, c) in enumerate(zip(methods, colours(methods))):
        st = [per_class[k].get(m, {}).get(metric) or {} for k in classes]
        mean = np.array([np.nan if s.get("mean") is None else s["mean"] for s in st], dtype=float)
        lo = np.array([np.nan if s.get("ci_low") is None else s["ci_low"] for s in st], dtype=float)
        hi = np.array([np.nan if s.get("ci_high") is None else s["ci_high"] for s in st], dtype=float)
        err = np.nan_to_num(np.vstack([mean - lo, hi - mean]).clip(min=0))
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, np.nan_to_num(mean), width, yerr=err, color=c, label=m,
               capsize=2, error_kw={"elinewidth": 0.8}, hatch=BASELINE_HATCH.get(m), edgecolor="white" if m not in
               BASELINE_HATCH else "#555555", linewidth=0.5)
    ax.set_xticks(x, classes, rotation=30 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_ylabel(f"{metric} (mean)")
    ax.set_ylim(0, 1.05 if metric == "pointing_game" else None)
    ax.legend(fontsize=8, ncols=min(len(methods), 5), loc="upper left", bbox_to_anchor=(0, 1.18), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def paired_scatter(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], metric: str,
                   labels: tuple[str, str] = ("A", "B")) -> bytes | None:
    """Per-image ``metric`` of A (x) against B (y), one panel per method; the diagonal is 'no change'."""
    methods = [m for m in a if len(a[m])]
    if not methods:
        return None
    cols = min(3, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig = _figure(3.0 * cols, 3.0 * rows)
    for i, (m, c) in enumerate(zip(methods, colours(methods))):
        ax = fig.add_subplot(rows, cols, i + 1)
        xa, yb = np.asarray(a[m], dtype=float), np.asarray(b[m], dtype=float)
        jitter = np.random.default_rng(0).uniform(-0.02, 0.02, (2, len(xa))) if len(np.unique(xa)) <= 2 else 0
        ax.scatter(xa + (jitter[0] if np.ndim(jitter) else 0), yb + (jitter[1] if np.ndim(jitter) else 0), s=8,
                   color=c, alpha=0.6)
        lo, hi = float(np.nanmin([xa.min(), yb.min()])), float(np.nanmax([xa.max(), yb.max()]))
        ax.plot([lo, hi], [lo, hi], color="#555555", lw=0.8, ls="--")
        ax.set_xlabel(f"{labels[0]}: {metric}", fontsize=8)
        ax.set_ylabel(f"{labels[1]}: {metric}", fontsize=8)
        ax.set_title(m, fontsize=10)
    return _png(fig)


def band(ax, x: Sequence[float], stats: Mapping[str, Sequence[Any]], colour: str, label: str, **line: Any) -> None:
    """A mean line with its 95% CI band; ``stats`` holds ``mean``, ``ci_low``, ``ci_high`` (None = NaN)."""
    num = [[math.nan if v is None else float(v) for v in stats[k]] for k in ("mean", "ci_low", "ci_high")]
    ax.plot(x, num[0], color=colour, label=label, **line)
    ax.fill_between(x, num[1], num[2], color=colour, alpha=0.2)


def per_layer(layers: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
              summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, bytes]]:
    """One small figure per metric: each method's mean per layer (integer ticks: block index) with
    its 95% CI band; the centre baseline dashed. ``layers`` is results.json's ``per_layer``."""
    from matplotlib.ticker import MaxNLocator

    metrics = sorted({k for mets in layers.values() for k in mets})
    methods = list(layers)
    out = []
    for metric in metrics:
        fig = _figure(*PANEL)
        ax = fig.add_subplot(1, 1, 1)
        for m, c in zip(methods, colours(methods)):
            stats = layers[m].get(metric) or []
            columns = {k: [s.get(k) for s in stats] for k in ("mean", "ci_low", "ci_high")}
            band(ax, list(range(len(stats))), columns, c, m, marker="o", ms=3)
        centre = (summary.get("centre") or {}).get(metric, {}).get("mean")
        if centre is not None:
            ax.axhline(centre, color=BASELINE_COLOURS["centre"], ls="--", lw=1, label="centre baseline")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("layer (block index)", fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        out.append((metric, _png(fig)))
    return out
