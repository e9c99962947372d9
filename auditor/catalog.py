"""What ``auditor models`` and ``auditor methods`` print: a described table, not bare names.

Families and needs are stated here in plain words, once; a name registered later (a user's
plug-in) still gets a row from its docstring.
"""

from __future__ import annotations

import inspect
import re
from typing import Sequence

_CAM_LAYER = "any model (Grad-CAM's layer: a ViT's last block, a CNN's last conv layer)"

#: method -> (family, what it shows, what it needs)
METHODS = {
    "gradcam": ("CAM", "Grad-CAM: a layer's activations weighted by the target's gradient",
                "any model (a ViT's last block, a CNN's last conv layer)"),
    "input_gradient": ("gradient", "vanilla gradient: |d score / d pixel|, largest over the colour channels", "any model"),
    "integrated_gradients": ("gradient", "Integrated Gradients: gradients along a path from a baseline image, "
                             "times the input's change", "any model"),
    "smoothgrad": ("gradient", "SmoothGrad: the input gradient averaged over noisy copies of the image", "any model"),
    "hirescam": ("CAM", "HiResCAM: activations times gradients element-wise, summed over channels", _CAM_LAYER),
    "gradcam_plusplus": ("CAM", "Grad-CAM++: channels weighted by positive gradients with higher-order "
                         "pixel weights", _CAM_LAYER),
    "xgradcam": ("CAM", "XGrad-CAM: gradients weighted by the activations' share of their channel", _CAM_LAYER),
    "layercam": ("CAM", "LayerCAM: positive gradients times activations at every location", _CAM_LAYER),
    "eigencam": ("CAM", "Eigen-CAM: the activations' first principal component (no gradient)", _CAM_LAYER),
    "eigengradcam": ("CAM", "Eigen-Grad-CAM: the first principal component of activations times gradients",
                     _CAM_LAYER),
    "scorecam": ("CAM", "Score-CAM: each channel weighted by the target's score on the image masked by it",
                 _CAM_LAYER),
    "ablationcam": ("CAM", "Ablation-CAM: each channel weighted by the target's drop when it is ablated", _CAM_LAYER),
    "occlusion": ("perturbation", "Occlusion: the target's drop when a sliding window of the image is covered",
                  "any model"),
    "attnlrp": ("relevance", "AttnLRP: the target's relevance at every pixel (LRP rules for attention)",
                "a ViT with timm / DINO blocks"),
    "legrad": ("gradient", "LeGrad: each block's score's positive gradient w.r.t. its attention, averaged",
               "a ViT whose attention weights can be read, with a final norm and head"),
    "cls_attention": ("attention", "how much the CLS token attends to each patch (one layer)",
                      "a ViT whose attention weights can be read, with a CLS token"),
    "rollout": ("attention", "attention rollout: attention multiplied through every layer",
                "a ViT whose attention weights can be read, with a CLS token"),
    "generic_attention": ("attention", "Generic Attention (Chefer et al. 2021): gradient-weighted attention, "
                          "positive part, rolled out", "a ViT whose attention weights can be read, with a CLS token"),
    "transformer_attribution": ("attention", "Transformer Attribution (Chefer et al. 2021): LRP relevance of each "
                                "attention times its gradient, rolled out",
                                "a ViT in the timm / DINO block layout, with a CLS token"),
    "window_attention": ("attention", "mass each token receives inside its shifted window",
                         "the multi-attention backbone (--use-mab), or a timm / transformers Swin"),
    "ocab_attention": ("attention", "overlapping cross-attention received per token",
                       "the multi-attention backbone (--use-ocab)"),
    "channel_attention": ("attention", "channel-attention weights of the mixed attention blocks",
                          "the multi-attention backbone (--use-mab)"),
    "reconstruction_attention": ("few-shot", "mass each query token receives from the support images",
                                 "dual reconstruction (--use-drff) and support images (--episodes / --support)"),
    "rise": ("perturbation", "RISE: random masks, each weighted by the target's probability on the masked image",
             "a class target (or rise.score=raw)"),
    "centre": ("baseline", "a centred Gaussian: what 'looks at the middle' scores", "nothing (no model)"),
    "random": ("baseline", "uniform noise: what chance scores", "nothing (no model)"),
}

#: name prefix -> (family, what it needs)
MODEL_FAMILIES = (
    ("vit_", "ViT", "patch size (checkpoint, else 16) divides the image size; --use-mab etc. for the fork"),
    ("efficientnet", "CNN", "no attention: Grad-CAM and input gradient apply"),
)


def _first_line(obj: object) -> str:
    return (inspect.getdoc(obj) or "").strip().splitlines()[0] if inspect.getdoc(obj) else ""


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is left unpadded."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = []
    for r in [head, *rows]:
        lines.append("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip())
    return "\n".join(lines)


def models_table() -> str:
    """Built-in architectures: name, family, what it is, what it needs; then the bundled checkpoints."""
    from .models import list_models
    from .models._registry import _REGISTRY
    from .resources import bundled_models

    rows = []
    for name in list_models():
        family, needs = next(((f, n) for prefix, f, n in MODEL_FAMILIES if name.startswith(prefix)), ("other", ""))
        rows.append((name, family, _first_line(_REGISTRY[name]), needs))
    out = _table(("NAME", "FAMILY", "WHAT IT IS", "NEEDS"), rows)
    bundled = ", ".join(f"demo:{n}" for n in bundled_models())
    return (out + "\n\nMulti-attention fork (FewTURE): a ViT with --use-mab / --use-ocab / --use-drff (read from "
            "its checkpoint when not given)."
            + f"\nBundled checkpoints (carry their architecture, no --arch needed): {bundled}."
            "\nYour own model: --model package.module:factory, or --arch NAME defined in ./models/__init__.py.")


def methods_table() -> str:
    """Methods: name, family, what the map shows, what the model needs for it."""
    from .methods import list_methods
    from .methods.registry import _METHODS

    rows, costs = [], []
    for name in list_methods():
        family, shows, needs = METHODS.get(name, ("other", _summary(name), ""))
        rows.append((name, family, shows, needs))
        if _METHODS[name].needs_own_passes:
            costs.append((name, _METHODS[name].cost))
    return (_table(("NAME", "FAMILY", "SHOWS", "NEEDS"), rows)
            + "\n\nMethods with their own passes (asked for by name; cost on top of the shared pass):\n"
            + "\n".join(f"  {name}: {cost}" for name, cost in costs)
            + "\n\nA method that does not fit the model is skipped with the reason in the report; "
              "choose with --methods a,b.")


def _summary(name: str) -> str:
    """A method module's docstring opening: ``Name (Authors)`` of its paper, at most 90 characters."""
    from .methods import describe_method

    text = describe_method(name)["summary"].split(". ")[0]
    cited = re.match(r'(.*?) \((.*?), "', text)
    text = f"{cited[1]} ({cited[2]})" if cited else text
    return text if len(text) <= 90 else text[:87] + "..."
