"""The report's faithfulness section: mean curves with their CI band, the randomisation
cascade, and a badge per method that fails a sanity check. Reads ``results.json``'s
``faithfulness`` section and summary only (no model)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from .assets import AssetSink
from . import plots
from .plots import _figure, _png, colours

CURVE_TITLES = {"deletion_normalised": "Deletion / unperturbed (lower)", "insertion_normalised": "Insertion / unperturbed (higher)",
                "deletion": "Deletion (lower is better)", "insertion": "Insertion (higher is better)",
                "road_morf": "ROAD, most relevant first (lower)", "road_lerf": "ROAD, least relevant first (higher)"}
#: the normalised curve replaces the raw one where both are present (results written before: raw only)
RAW = {"deletion": "deletion_normalised", "insertion": "insertion_normalised"}


def curves_png(curves: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Any] | None = None) -> bytes | None:
    """One panel per curve kind; per method the mean target probability and its 95% CI band;
    the random pixel order's curve (``reference``, results.json ``faithfulness.random_order``)
    dashed in grey beside them."""
    present = [k for k in CURVE_TITLES if any(k in cs for cs in curves.values())]
    kinds = [k for k in present if RAW.get(k) not in present]
    if not kinds:
        return None
    methods = list(curves)
    fig = _figure(3.2 * len(kinds), 2.6)
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for m, c in zip(methods, colours(methods)):
            band = curves[m].get(kind)
            if not band:
                continue
            plots.band(ax, band["fractions"], band, c, m)
        ref = (reference or {}).get(kind)
        if ref:
            plots.band(ax, ref["fractions"], ref, "#777777", "random order", linestyle="--")
        ax.set_title(CURVE_TITLES[kind], fontsize=9)
        ax.set_xlabel("fraction of pixels inserted" if kind.startswith("insertion") else "fraction of pixels removed",
                      fontsize=8)
        ax.set_ylim(0, None if kind.endswith("_normalised") else 1)
        ax.set_ylabel("probability / unperturbed" if kind.endswith("_normalised") else "target-class probability",
                      fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    return _png(fig)


def cascade_png(rand: Mapping[str, Mapping[str, Any]], threshold: float) -> bytes | None:
    """Spearman (absolute maps) to the trained model's maps after each cascade step."""
    if not rand:
        return None
    methods = list(rand)
    layers = next(iter(rand.values()))["layers"]
    fig = _figure(max(4.0, 0.5 * len(layers) + 2), 2.8)
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(len(layers)))
    for m, c in zip(methods, colours(methods)):
        plots.band(ax, x, rand[m]["spearman"], c, m, marker="o")
    ax.axhline(threshold, color="#999999", linestyle="--", linewidth=1)
    ax.set_xticks(x, [f"+{name}" for name in layers], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("Spearman to trained map", fontsize=8)
    ax.set_title("Cascading randomisation, from the top", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def faithfulness_context(data: Mapping[str, Any], sink: AssetSink) -> dict[str, Any] | None:
    """Template context, or None when the audit ran no faithfulness check."""
    section = data.get("faithfulness")
    if not section:
        return None
    threshold = float(section.get("threshold", 0.5))
    plots = []
    png = curves_png(section.get("curves") or {}, section.get("random_order"))
    if png:
        plots.append({"title": "Deletion / insertion / ROAD curves (mean, 95% CI; dashed: random pixel order)",
                      "img": sink.add(png, "png"),
                      "alt": "Target-class probability (deletion and insertion: divided by the unperturbed image's) "
                             "against the fraction of pixels removed or inserted, per method, beside the curve of a "
                             "random pixel order."})
    png = cascade_png(section.get("randomisation") or {}, threshold)
    if png:
        plots.append({"title": "Randomisation cascade: similarity per randomised layer", "img": sink.add(png, "png"),
                      "alt": "Spearman correlation between the trained and randomised model's maps after each "
                             "layer is randomised, per method; dashed line: the flag threshold."})
    badges = []
    for m, r in (section.get("randomisation") or {}).items():
        if r.get("weight_independent"):
            badges.append({"method": m, "text": "does not depend on the weights", "css": "fail",
                           "why": f"its maps after full randomisation still correlate above {threshold:g} (Spearman)"})
    for m, mets in (data.get("summary") or {}).items():
        v = (mets.get("random_target_spearman") or {}).get("mean")
        if v is not None and math.isfinite(v) and v > threshold:
            badges.append({"method": m, "text": "class-insensitive", "css": "fail",
                           "why": f"its maps for a random other class correlate {v:.2f} (Spearman) with the target's"})
    skipped = [f"{k}: {v}" for k, v in (section.get("skipped") or {}).items()]
    return {"checks": ", ".join(section.get("checks") or []), "plots": plots, "badges": badges, "skipped": skipped,
            "threshold": f"{threshold:g}"}
