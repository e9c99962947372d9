"""``auditor show ID``: one image's card as a small self-contained HTML page, for any image of
an audit (the report's gallery shows a bounded selection; this draws the others on demand).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError
from ..results import AuditResult, RowsFile
from .assets import AssetSink, colour_scale_css
from .build import draw_card_dicts, lead_method
from .common import as_result, methods_of, metrics_of, primary_metrics
from .gallery import References, side_of
from .templating import render_page


def card_path(result: AuditResult, image_id: str) -> Path:
    """The default file: ``cards/<id>.html`` beside results.json (characters other than letters,
    digits, ``.``, ``-`` and ``_`` become ``_``)."""
    return result.out / "cards" / (re.sub(r"[^A-Za-z0-9._-]", "_", image_id) + ".html")


def render_card(results: str | Path | AuditResult, image_id: str, *, out: str | Path | None = None,
                cmap: str = "jet", style: str = "overlay") -> Path:
    """Write ``image_id``'s card (original + reference, one overlay per method, its metrics) and return the path."""
    result = as_result(results)
    rows = result.rows
    row = rows.get(image_id) if isinstance(rows, RowsFile) else next(
        (r for r in rows if str(r.get("id")) == str(image_id)), None)
    where = result.out / "results.json"
    if row is None:
        raise UsageError(f"'{image_id}' is not an image of {where} ({len(rows)} rows): give an id from its "
                         "results.csv (first column)")
    if row.get("error"):
        raise UsageError(f"'{image_id}' was not scored, so it has no maps to draw: {row['error']}")
    path = Path(out) if out is not None else card_path(result, str(image_id))
    if path.is_dir() or path.suffix.lower() not in (".html", ".htm"):
        path = path / card_path(result, str(image_id)).name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = result.data
    methods, metrics = methods_of(data), metrics_of(data["summary"])
    side = side_of(result)
    sink = AssetSink(path, inline_limit=1 << 62)  # one card: every image embedded, the file stands alone
    try:
        lead = lead_method([row], methods, primary_metrics(metrics)) if methods else None
        card = draw_card_dicts(result, [row], side, sink, References(data["settings"], [row]), lead=lead,
                               metrics=metrics, cmap=cmap, style=style)[0]
    finally:
        side.maps.close()
    return render_page("card.html.j2", path, title=f"Image {image_id}: attention audit card", card=card,
                       results=str(where), legend={"css": colour_scale_css(cmap), "cmap": cmap},
                       storage="Images embedded in this file", orders={})
