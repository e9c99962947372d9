"""Report plots, drawn once to PNG bytes with matplotlib's Agg canvas (no pyplot state).

Colours are the Okabe-Ito palette (safe for colour-blind readers); baselines are grey.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..results import BASELINES

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
BASELINE_COLOUR = "#999999"


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
            out.append(BASELINE_COLOUR)
        else:
            out.append(OKABE_ITO[i % len(OKABE_ITO)])
            i += 1
    return out


def distributions(values: Mapping[str, Mapping[str, Sequence[float]]], methods: Sequence[str],
                  metrics: Sequence[str]) -> bytes | None:
    """Box plots of the per-image values: one panel per metric, one box per method.

    ``values[method][metric]`` = finite per-image values.
    """
    metrics = [k for k in metrics if any(len(values.get(m, {}).get(k, ())) for m in methods)]
    if not metrics:
        return None
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(3.2 * cols, 2.6 * rows)
    cs = colours(methods)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        data = [np.asarray(values.get(m, {}).get(metric, ()), dtype=float) for m in methods]
        pos = [j for j, d in enumerate(data) if len(d)]
        bp = ax.boxplot([data[j] for j in pos], positions=pos, widths=0.6, patch_artist=True, showfliers=True,
                        flierprops={"markersize": 2})
        for patch, j in zip(bp["boxes"], pos):
            patch.set_facecolor(cs[j])
            patch.set_alpha(0.75)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def class_hit_rates(per_class: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]], methods: Sequence[str],
                    metric: str = "pointing_game") -> bytes | None:
    """Grouped bars: ``metric`` mean per class and method, 95% CI as error bars."""
    classes = [c for c in per_class if any(metric in per_class[c].get(m, {}) for m in methods)]
    if not classes:
        return None
    fig = _figure(min(12.0, 2.0 + 0.9 * len(classes) * max(1, len(methods)) / 2), 3.2)
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
               capsize=2, error_kw={"elinewidth": 0.8})
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
    fig = _figure(3.0 * len(methods), 3.0)
    for i, (m, c) in enumerate(zip(methods, colours(methods))):
        ax = fig.add_subplot(1, len(methods), i + 1)
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
              summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> bytes | None:
    """One panel per metric: each method's mean per layer with its 95% CI band; the centre
    baseline dashed. ``layers`` is results.json's ``per_layer``."""
    metrics = sorted({k for mets in layers.values() for k in mets})
    if not metrics:
        return None
    methods = list(layers)
    fig = _figure(3.4 * len(metrics), 2.6)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for m, c in zip(methods, colours(methods)):
            stats = layers[m].get(metric) or []
            columns = {k: [s.get(k) for s in stats] for k in ("mean", "ci_low", "ci_high")}
            band(ax, list(range(len(stats))), columns, c, m, marker="o", ms=3)
        centre = (summary.get("centre") or {}).get(metric, {}).get("mean")
        if centre is not None:
            ax.axhline(centre, color="grey", ls="--", lw=1, label="centre baseline")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("layer (block index)", fontsize=8)
        ax.set_ylim(0, 1)
        if i == 0:
            ax.legend(fontsize=7)
    return _png(fig)
