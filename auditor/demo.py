"""``auditor demo``: the whole product on a fresh machine, offline, in about a minute.

It writes a held-out synthetic data set (shapes on natural textures, each image marked in
its corner with its class colour), audits two bundled checkpoints on it with every method
-- ``demo:clean`` (trained to ignore the marks) and ``demo:shortcut`` (trained where the
mark *is* the label) -- and writes one comparison report. Both classify well; only the
audit shows that the shortcut model looks at the corner mark instead of the object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .datasets.synthetic import SyntheticConfig, write_dataset

DEMO_SEED = 7
#: The gate the demo applies: the candidate may not lose more than this against the clean model.
DEMO_GATE = ("rollout.pointing_game=0.1", "input_gradient.pointing_game=0.1")


def run_demo(out: str | Path = "demo-audit", *, n: int = 100, methods: Sequence[str] | None = None,
             max_drop: Sequence[str] = DEMO_GATE, batch_size: int = 32, device: str = "cpu",
             log: Callable[[str], None] = print, cmap: str = "jet"):
    """Generate the demo set in ``out/data``, audit both bundled models, compare them in ``out``.

    The device is checked before anything is written. Returns the
    :class:`~auditor.compare.Comparison` (``passed`` is the gate's verdict for the shortcut
    model).
    """
    from .compare import compare_models
    from .models import resolve_device

    resolve_device(device)  # a bad --device fails before the data set is written
    out = Path(out)
    log(f"[1/3] Writing {n} held-out images with boxes and gaze to {out / 'data'} ...")
    manifest = write_dataset(out / "data", n, seed=DEMO_SEED, cfg=SyntheticConfig(shortcut="consistent"))
    log("[2/3] Auditing demo:clean (A) and demo:shortcut (B) with every method ...")
    comp = compare_models(manifest, out=out, model_a={"checkpoint": "demo:clean"},
                          model_b={"checkpoint": "demo:shortcut"}, max_drop=max_drop, methods=methods,
                          batch_size=batch_size, device=device, overwrite=True, cmap=cmap)
    log("[3/3] Comparison written.")
    return comp


def gate_line(comp: Any) -> str:
    """The demo's last word: each gated score for A and B, the drop, and the drop allowed.

    e.g. ``The shortcut model FAILS the gate: rollout pointing game 0.82 (clean) -> 0.31
    (shortcut), a drop of 0.51 where at most 0.10 is allowed; ...``
    """
    from .gate import ERRORS

    parts = []
    for v in comp.data["verdicts"]:
        if v["method"] == ERRORS:  # only worth a word when images could not be audited
            if not v["passed"]:
                parts.append(f"{v['reason']} [FAIL]")
            continue
        d = (comp.data["deltas"].get(v["method"]) or {}).get(v["metric"]) or {}
        if d.get("mean_a") is None or d.get("mean_b") is None:
            parts.append(f"{v['method']} {v['metric'].replace('_', ' ')}: no score ({v.get('reason', '')})")
            continue
        drop = d["mean_a"] - d["mean_b"]
        change = f"a drop of {drop:.2f}" if drop > 0 else f"a gain of {-drop:.2f}"
        parts.append(f"{v['method']} {v['metric'].replace('_', ' ')} {d['mean_a']:.2f} (clean) -> {d['mean_b']:.2f} "
                     f"(shortcut), {change} where at most {float(v['threshold']):.2f} is allowed"
                     f"{'' if v['passed'] else ' [FAIL]'}")
    verdict = "passes" if comp.passed else "FAILS"
    return f"The shortcut model {verdict} the gate: " + "; ".join(parts) + "."
