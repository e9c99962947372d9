"""The original guide's single-image flow as a library call: ``auditor.visualize(...)``.

One image, one model, one pass: Grad-CAM and CLS-patch attention are computed together,
upsampled to the image's own size and written as overlays and a patch grid. For the
multi-attention backbone (MAB / OCAB / DRFF) the same pass also gives the window attention,
channel attention and input-gradient maps, and -- with support images of the query's class --
the dual reconstruction attention; maps that do not apply are listed with the reason.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import maps as maplib
from . import render
import torch

from .images import load_image
from .preprocess import Preprocess, model_preprocess
from .methods import build_methods, compute_maps, parse_method_options
from .models import build_model


def _mark() -> str:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓".encode(enc)
        return "✓"
    except (UnicodeEncodeError, LookupError):
        return "OK"


def input_preprocess(model: Any, image_size: int | tuple[int, int] | None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     resize: str = "auto") -> Preprocess:
    """Preprocessing from explicit options, else the model's data config, else 224 / ImageNet
    squash (:func:`auditor.preprocess.model_preprocess`)."""
    return model_preprocess(model, image_size, resize=resize, mean=mean, std=std)


def _merged_options(method_options: Sequence[str] | dict[str, dict[str, Any]], *, gradcam_layer: str | None,
                    layer: int, head: int | None) -> dict[str, dict[str, Any]]:
    """``--method-option`` values with the shorthands ``--gradcam-layer`` / ``--layer`` / ``--head``
    folded in; a value given both ways is a UsageError."""
    from .errors import UsageError

    opts = ({m: dict(kw) for m, kw in method_options.items()} if isinstance(method_options, dict)
            else parse_method_options(list(method_options)))
    for method, option, flag, value, default in (("gradcam", "layer", "--gradcam-layer", gradcam_layer, None),
                                                 ("cls_attention", "layer", "--layer", layer, -1),
                                                 ("cls_attention", "head", "--head", head, None)):
        if value == default:
            continue
        if option in opts.get(method, {}):
            raise UsageError(f"{flag} {value} and --method-option {method}.{option}={opts[method][option]} set the "
                             "same thing: give one of them")
        opts.setdefault(method, {})[option] = value
    return opts


def resolve_target_class(model: Any, value: int | str | None, preprocess: Any) -> int | None:
    """``--target-class``: a class index, or one of the model's class names (matched as an audit
    matches a data set's classes: the model's ``class_names`` / timm ``label_names`` / HF
    ``id2label``, or ImageNet-1k names, synonyms and WordNet ids for a 1000-class head)."""
    from .errors import UsageError
    from .target import model_classes, output_size

    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    size = getattr(model, "num_classes", None)
    if size == 0:
        raise UsageError(f"--target-class {text!r}: this backbone has no class head (headless), so it has no classes "
                         "to explain; leave --target-class out")
    classes = model_classes(model, size if isinstance(size, int) and size > 0 else output_size(model, preprocess))
    if classes.names is None:
        raise UsageError(f"--target-class {text!r}: the model names none of its {classes.size} classes; give the "
                         f"class index (0..{classes.size - 1})")
    hits = classes.lookup(text)
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError(f"--target-class {text!r} matches several classes: "
                         + ", ".join(f"{classes.names[i]} ({i})" for i in hits) + "; give the index")
    listing = (", ".join(f"{n} ({i})" for i, n in enumerate(classes.names)) if classes.size <= 30
               else "close names: " + (", ".join(classes.close(text)) or "none"))
    raise UsageError(f"--target-class {text!r} is not one of the model's class names ({listing}); give a name or an index")


def check_choices(model: Any, *, layer: int, head: int | None, target_class: int | None,
                  gradcam_layer: str | None) -> None:
    """``--layer`` / ``--head`` / ``--target-class`` / ``--gradcam-layer`` must exist in ``model``
    (UsageError naming the valid range), checked before the pass."""
    from .errors import UsageError
    from .methods.base import attention_modules

    attn = attention_modules(model)
    if attn and not -len(attn) <= layer < len(attn):
        raise UsageError(f"--layer {layer} does not exist: the model has {len(attn)} attention layer{'s' if len(attn) != 1 else ''} "
                         f"(use 0..{len(attn) - 1}, or -1 for the last)")
    if head is not None and attn:
        heads = getattr(model.get_submodule(attn[layer][0].rsplit(".", 1)[0]), "num_heads", None)
        if heads is not None and not -heads <= head < heads:
            raise UsageError(f"--head {head} does not exist: layer {layer} has {heads} heads (use 0..{heads - 1}, "
                             "or leave --head out for their mean)")
    if (layer != -1 or head is not None) and not attn:
        raise UsageError(f"--layer / --head choose an attention layer, but {type(model).__name__} has no readable "
                         "attention (a CNN, or fused attention): leave them out")
    classes = getattr(model, "num_classes", None)
    if target_class is not None and isinstance(classes, int):
        if classes == 0:
            raise UsageError(f"--target-class {target_class}: this backbone has no class head (headless), so it has "
                             "no classes to explain; leave --target-class out")
        if target_class >= classes:
            raise UsageError(f"--target-class {target_class} does not exist: the model has {classes} classes "
                             f"(use 0..{classes - 1})")
    if gradcam_layer is not None:
        names = [n for n, _ in model.named_modules() if n]
        if gradcam_layer not in names:
            import difflib

            close = difflib.get_close_matches(gradcam_layer, names, n=3)
            raise UsageError(f"--gradcam-layer {gradcam_layer} is not a module of the model"
                             + (f"; close names: {', '.join(close)}" if close else f"; e.g. {names[-1]}"))


#: file written for each method's map (an overlay on the image)
FIGURES = {"gradcam": "gradcam_overlay.png", "cls_attention": "patch_attention_overlay.png",
           "window_attention": "window_attention_overlay.png", "channel_attention": "channel_attention.png",
           "input_gradient": "input_gradient_overlay.png", "ocab_attention": "ocab_attention_overlay.png",
           "reconstruction_attention": "reconstruction_attention_overlay.png"}
#: figure titles (what the map shows, in words)
TITLES = {"gradcam": "Grad-CAM", "cls_attention": "Patch attention (CLS token, {layer}, {head})",
          "window_attention": "Window attention received", "channel_attention": "Channel attention",
          "input_gradient": "Input gradient x input", "ocab_attention": "Overlapping cross-attention received",
          "reconstruction_attention": "Reconstruction attention: mass received from the support images"}
MULTI_ATTENTION_METHODS = ("window_attention", "ocab_attention", "channel_attention", "input_gradient",
                           "reconstruction_attention")


def visualize(image_path: str | Path, *, arch: str | None = None, factory: str | None = None,
              checkpoint: str | Path | None = None, patch_size: int | None = None,
              image_size: int | tuple[int, int] | None = None, output_dir: str | Path = "attention_viz",
              layer: int = -1, head: int | None = None, target_class: int | str | None = None,
              gradcam_layer: str | None = None, device: str = "cpu", alpha: float = 0.5,
              colormap: str = "jet", save_maps: bool = False, trust_checkpoint: bool = False,
              log: Callable[[str], None] = print, model_kwargs: dict[str, Any] | None = None,
              support: Sequence[str | Path] | None = None, resize: str = "auto",
              method_options: Sequence[str] | dict[str, dict[str, Any]] = ()) -> dict[str, Path]:
    """Write ``gradcam_overlay.png``, ``patch_attention_overlay.png`` and ``patch_grid.png``.

    Multi-attention models (``use_mab`` / ``use_ocab`` / ``use_drff``, from ``model_kwargs`` or
    the checkpoint) also get ``window_attention_overlay.png``, ``channel_attention.png``,
    ``input_gradient_overlay.png`` and, with ``support`` images (few-shot support set of the
    query's class), ``reconstruction_attention_overlay.png`` (the mass each query token
    receives from the support tokens), ``reconstruction_best_match_overlay.png`` (each query
    token's best-match weight) and ``reconstruction_pairs.png`` (the query and every support
    image side by side, each with the mass its tokens receive from the other side); their
    gradient target is the prototype similarity with support images, else the norm of the
    mean patch token.

    ``method_options``: ``["gradcam.layer=blocks.10.norm1", "cls_attention.head=3"]`` (as
    ``auditor run``'s) for the methods drawn here; ``gradcam_layer`` / ``layer`` / ``head`` are
    shorthands for ``gradcam.layer`` / ``cls_attention.layer`` / ``cls_attention.head`` (giving
    both is refused). ``resize``: ``auto`` / ``squash`` / ``crop`` (:func:`auditor.preprocess.model_preprocess`);
    with a crop the maps cover the crop, which is framed on every overlay.

    Maps are drawn at the image's original size; with ``save_maps`` the float32 maps at that
    size, before display normalisation, go to ``maps.npz`` (keys ``<method>/<image stem>``).
    Returns the written files by name.
    """
    ok = _mark()
    image_path = Path(image_path)
    out = Path(output_dir)
    log(f"[1/4] Loading image: {image_path.name}")
    image = load_image(image_path)
    height, width = image.shape[:2]
    log(f"   Image size: ({width}, {height})")

    log(f"\n[2/4] Loading model: {factory or arch or checkpoint}")
    if checkpoint is not None:
        log(f"   Loading checkpoint: {checkpoint}")
    loaded = build_model(arch, factory=factory, checkpoint=checkpoint, patch_size=patch_size,
                         image_size=image_size, device=device, trust_checkpoint=trust_checkpoint, **(model_kwargs or {}))
    if loaded.checkpoint is None:
        log("   No checkpoint given: random weights, so the maps show the architecture's prior only")
    for notice in loaded.checkpoint.notices if loaded.checkpoint else []:
        log(f"   Note: {notice}")
    model = loaded.model
    for note in getattr(model, "notes", []):
        log(f"   Note: {note}")
    names = ["gradcam", "cls_attention"] + (list(MULTI_ATTENTION_METHODS) if hasattr(model, "cls_bypasses_blocks") else [])
    options = _merged_options(method_options, gradcam_layer=gradcam_layer, layer=layer, head=head)
    methods = build_methods(names, options)
    cls_opts = options.get("cls_attention", {})
    if isinstance(target_class, str) and target_class.strip().isdigit():
        target_class = int(target_class)
    check_choices(model, layer=cls_opts.get("layer", -1), head=cls_opts.get("head"),
                  target_class=target_class if isinstance(target_class, int) else None,
                  gradcam_layer=options.get("gradcam", {}).get("layer"))
    pre = input_preprocess(model, image_size, resize=resize)
    target_class = resolve_target_class(model, target_class, pre)  # a class name -> its index
    log(f"   {ok} Model loaded successfully")
    region = pre.region((height, width))
    if region is not None:
        x0, y0, x1, y1 = pre.crop_box((height, width))
        log(f"   Centre crop ({pre.source}): the model sees x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} of the image; "
            "outside the frame its maps show no evidence")
    x = pre(image).to(next(model.parameters()).device)
    support_images = [load_image(p) for p in support or ()]
    support_x = torch.cat([pre(im) for im in support_images]).to(x.device) if support_images else None

    log("\n[3/4] Computing Grad-CAM...")
    if support and target_class is not None:
        from .errors import UsageError

        raise UsageError(f"--target-class {target_class} explains a class, --support the similarity with the support "
                         "images' prototype: give one of them")
    target = "prototype" if support else None if target_class is None else [target_class]
    res = compute_maps(model, x, methods, target=target, support=support_x)
    if res.target_kind == "cls-norm":
        log("   Target: the norm of the CLS output (headless backbone: it has no classes)")
        target_text = "target: CLS-output norm"
    elif res.target_kind in ("patch-norm", "prototype"):
        what = ("cosine similarity of the mean patch token with the support prototype" if res.target_kind == "prototype"
                else "the norm of the mean patch token")
        log(f"   Target: {what} (the CLS token is not used: it is the same for every image)")
        target_text = "target: support prototype" if res.target_kind == "prototype" else "target: mean patch-token norm"
    else:
        log(f"   Target: class {res.targets[0]} ({'given' if target_class is not None else 'predicted'})")
        names = getattr(model, "class_names", None) or []
        cls = int(res.targets[0])
        label = f"{names[cls]} ({cls})" if cls < len(names) else f"class {cls}"
        target_text = f"target: {label}, {'given' if target_class is not None else 'predicted'}"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    saved: dict[str, np.ndarray] = {}

    def save(name: str, array: np.ndarray, title: str, legend: str = "") -> None:
        if region is not None and array.shape[:2] == (height, width):
            array = render.crop_frame(array, region)
        fig = render.figure(array, f"{title} · {image_path.name} · {target_text}", cmap=colormap, legend=legend)
        written[name] = render.save_png(fig, out / name)
        log(f"{ok} Saved: {written[name]}")

    for method in methods:
        name = method.name
        if name == "cls_attention":
            log("   Extracting patch attention...")
        if name not in res.maps:
            log(f"   {name}: not applicable ({res.skipped.get(name, 'no map')})")
            continue
        raw = res.maps[name].maps[0]
        full = maplib.upsample(raw, (height, width), region)
        saved[f"{name}/{image_path.stem}"] = full
        post = maplib.PostProcess.from_mode(method.normalization)  # the scored map is the drawn map
        problem = post.problem(raw)
        if problem:
            log(f"   Warning: {name}: {problem}")
        heat = post(raw, (height, width), region)
        title = TITLES[name].format(layer="last layer" if method.layer == -1 else f"layer {method.layer}",
                                    head="mean of heads" if method.head is None else f"head {method.head}") \
            if name == "cls_attention" else TITLES[name]
        save(FIGURES[name], render.overlay(image, heat, alpha=alpha, cmap=colormap), title)
        if name == "cls_attention":
            grid = post.token_map(raw)  # the overlay's post-processing and colours, one tint per patch
            save("patch_grid.png", render.patch_grid(image, grid, alpha=alpha, cmap=colormap, top_k=5, region=region),
                 f"{title}, per patch", render.patch_grid_legend(5, tuple(grid.shape)))
        if name == "reconstruction_attention" and not problem:
            extras = res.maps[name].extras
            save("reconstruction_best_match_overlay.png",
                 render.overlay(image, maplib.to_image(extras["best_match"][0], (height, width), region=region), alpha=alpha,
                                cmap=colormap), "Reconstruction: each query token's best-match weight")
            panels = [render.overlay(image, heat, alpha=alpha, cmap=colormap)] + [
                render.overlay(im, maplib.to_image(m, im.shape[:2], region=pre.region(im.shape[:2])), alpha=alpha,
                               cmap=colormap)
                for im, m in zip(support_images, extras["support_maps"][0])]
            save("reconstruction_pairs.png", render.side_by_side(panels),
                 "Reconstruction: query (left) and each support image, mass received from the other side")
    if save_maps:
        from .io import atomic_path

        with atomic_path(out / "maps.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **saved)
        written["maps.npz"] = out / "maps.npz"
        log(f"{ok} Saved: {written['maps.npz']}")
    log("\n[4/4] Visualization complete!")
    return written
