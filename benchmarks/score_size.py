"""``--score-size``: what scoring at a capped resolution saves, and what it changes in the metrics.

N synthetic images (:func:`auditor.datasets.synthetic.write_dataset`, boxes + fixations) at
``SIDE`` px, ``demo:clean``, Grad-CAM + rollout, audited at full size and with
``score_size`` = each of ``CAPS`` in interleaved rounds. Reported per cap: audit time relative to
full size; the pointing game and relevance mass means at full size and capped; and the largest
change of any summary mean (method x metric, baselines included) in units of its CI half-width
at full size -- a cap whose changes stay well inside the CIs does not change what the audit says.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from auditor.datasets.synthetic import SyntheticConfig, write_dataset
from auditor.runner import run_audit

from ._harness import Config, Row, interleaved, ratio

FAMILY = "score size"
SIDE = 256  # the synthetic textures allow up to ~256 px
CAPS = (128, 64)


def run(cfg: Config, work: Path | None = None) -> list[Row]:
    n = 24 if cfg.quick else 96
    with tempfile.TemporaryDirectory(prefix="auditor-score-size-") as tmp:
        work = Path(work or tmp)
        manifest = write_dataset(work / "data", n, cfg=SyntheticConfig(size=SIDE))
        results = {}

        def audit(cap):
            def go():
                results[cap] = run_audit(manifest, out=work / f"cap{cap}", checkpoint="demo:clean",
                                         methods=["gradcam", "rollout"], batch_size=32, overwrite=True,
                                         score_size=cap, device=cfg.device)
            return go

        t = interleaved({str(c): audit(c) for c in (None, *CAPS)}, repeats=1 if cfg.quick else 2, warmup=0)
        return rows(results, t, n)


def rows(results: dict, t: dict[str, list[float]], n: int) -> list[Row]:
    full = results[None].data["summary"]
    out = []
    for cap in CAPS:
        summ = results[cap].data["summary"]
        worst, where, named = -1.0, "", []
        for m, mets in full.items():
            for k, st in mets.items():
                a, b = st.get("mean"), (summ.get(m, {}).get(k) or {}).get("mean")
                if a is None or b is None or st.get("ci_low") is None:
                    continue
                half = (st["ci_high"] - st["ci_low"]) / 2
                share = abs(b - a) / half if half > 0 else float(b != a) * float("inf")
                if share > worst:
                    worst, where = share, f"{m} · {k} {a:.3f} -> {b:.3f}, CI half-width {half:.3f}"
                if k in ("pointing_game", "relevance_mass") and m in ("gradcam", "rollout"):
                    named.append(f"{m} · {k} {a:.3f} -> {b:.3f}")
        speed = ratio(t, "None", str(cap))  # full-size time / capped time: the speed-up
        out.append(Row(FAMILY, f"score_size={cap} on {SIDE} px images ({n}, demo:clean, gradcam + rollout)",
                       f"{'; '.join(named)}; largest change of any mean in CI half-widths: {worst:.2f} ({where})",
                       speed, "speed-up over the full-size audit"))
    return out
