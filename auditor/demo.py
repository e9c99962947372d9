"""``auditor demo``: the whole product on a fresh machine, offline, in about a minute.

It writes a held-out synthetic data set (shapes on natural textures, each image marked in
its corner with its class colour), audits two bundled checkpoints on it with every method
-- ``demo:clean`` (trained to ignore the marks) and ``demo:shortcut`` (trained where the
mark *is* the label) -- and writes one comparison report. Both classify well; only the
audit shows that the shortcut model looks at the corner mark instead of the object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .datasets.synthetic import SyntheticConfig, write_dataset

DEMO_SEED = 7
#: The gate the demo applies: the candidate may not lose more than this against the clean model.
DEMO_GATE = ("rollout.pointing_game=0.1", "input_gradient.pointing_game=0.1")


def run_demo(out: str | Path = "demo-audit", *, n: int = 100, methods: Sequence[str] | None = None,
             max_drop: Sequence[str] = DEMO_GATE, batch_size: int = 32, device: str = "cpu",
             log: Callable[[str], None] = print):
    """Generate the demo set in ``out/data``, audit both bundled models, compare them in ``out``.

    Returns the :class:`~auditor.compare.Comparison` (``passed`` is the gate's verdict
    for the shortcut model).
    """
    from .compare import compare_models

    out = Path(out)
    log(f"[1/3] Writing {n} held-out images with boxes and gaze to {out / 'data'} ...")
    manifest = write_dataset(out / "data", n, seed=DEMO_SEED, cfg=SyntheticConfig(shortcut="consistent"))
    log("[2/3] Auditing demo:clean (A) and demo:shortcut (B) with every method ...")
    comp = compare_models(manifest, out=out, model_a={"checkpoint": "demo:clean"},
                          model_b={"checkpoint": "demo:shortcut"}, max_drop=max_drop, methods=methods,
                          batch_size=batch_size, device=device, overwrite=True)
    log("[3/3] Comparison written.")
    return comp
