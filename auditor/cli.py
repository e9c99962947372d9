"""Command-line interface: a thin click layer over library calls.

Exit codes: 0 pass, 1 thresholds failed, 2 usage / input error, 3 internal error. Expected
failures (:class:`auditor.errors.AuditorError`) print one paragraph on stderr, never a
traceback; anything else is a bug: traceback, then exit 3.
"""

from __future__ import annotations

import sys
import traceback

import click

from .errors import EXIT_INTERNAL, AuditorError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AuditorError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception:  # a bug: keep the traceback
            traceback.print_exc()
            click.echo("Internal error (a bug in attention-auditor): please report it with the traceback above.", err=True)
            ctx.exit(EXIT_INTERNAL)


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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="attention-auditor", prog_name="auditor")
def main() -> None:
    """Audit where vision models look: attention maps scored against boxes and human gaze.

    Exit codes: 0 pass, 1 thresholds failed, 2 usage or input error, 3 internal error.
    """


@main.command()
@click.option("--image-path", "--image_path", "image_path", required=True, help="The image to explain (any PIL format).")
@click.option("--model-path", "--model_path", "--checkpoint", "checkpoint", default=None,
              help="Checkpoint (.pth/.pt state_dict, optionally under 'params'/'state_dict'/'model', or .safetensors).")
@model_options
@click.option("--output-dir", "--output_dir", "output_dir", default="./attention_viz", show_default=True)
@click.option("--layer", type=int, default=-1, show_default=True, help="Attention layer for the patch attention map.")
@click.option("--head", type=int, default=None, help="One attention head [default: mean of the heads].")
@click.option("--target-class", type=click.IntRange(min=0), default=None, help="Class to explain [default: predicted].")
@click.option("--gradcam-layer", default=None, metavar="NAME", help="Module name for Grad-CAM [default: chosen for the model].")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--colormap", default="jet", show_default=True, help="Matplotlib colormap (cividis: colour-blind safe).")
@click.option("--save-maps", is_flag=True, help="Also write maps.npz (float32 maps at the image's size, unnormalised).")
def visualize(image_path, checkpoint, arch, factory, patch_size, image_size, embed_dim, depth, num_heads, device,
              trust_checkpoint, output_dir, layer, head, target_class, gradcam_layer, alpha, colormap, save_maps) -> None:
    """One image: Grad-CAM and patch attention overlays and a patch grid (the original guide's flow)."""
    from .visualize import visualize as run_visualize

    if arch is None and factory is None:
        arch = "vit_small"
    run_visualize(image_path, arch=arch, factory=factory, checkpoint=checkpoint, patch_size=patch_size,
                  image_size=image_size, output_dir=output_dir, layer=layer, head=head, target_class=target_class,
                  gradcam_layer=gradcam_layer, device=device, alpha=alpha, colormap=colormap, save_maps=save_maps,
                  trust_checkpoint=trust_checkpoint, log=click.echo,
                  model_kwargs=_overrides(embed_dim=embed_dim, depth=depth, num_heads=num_heads))


def _overrides(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


@main.command("models")
def list_models_cmd() -> None:
    """List the built-in architectures."""
    from .models import list_models

    for name in list_models():
        click.echo(name)


@main.command("methods")
def list_methods_cmd() -> None:
    """List the attention / saliency methods."""
    from .methods import list_methods

    for name in list_methods():
        click.echo(name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
