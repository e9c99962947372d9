"""Command-line interface: a thin click layer over library calls.

Exit codes: 0 pass, 1 thresholds failed, 2 usage / input error, 3 internal error. Expected
failures (:class:`auditor.errors.AuditorError`) print one paragraph on stderr, never a
traceback; anything else is a bug: traceback, then exit 3.
"""

from __future__ import annotations

import sys
import traceback

import click

from .cli_options import (SpaceSeparated, _carries_arch, _data, _existing_file, _out_dir, _few_shot, _floats3, _faithfulness, _given,
                          _overrides, _Progress, _report_out, _results_json, batch_size_option, check_model,
                          checkpoint_option, colormap_option, device_option, few_shot_options, gallery_option, gate_options, score_size_option,
                          image_size_option,
                          method_option_option, methods_option, model_options, resize_option, multi_attention_options, option, out_option,
                          outside_root_option, trust_option)
from .errors import EXIT_INTERNAL, AuditorError

_mask_classes = click.option(
    "--mask-classes", type=click.Choice(["target", "any"]), default="target", show_default=True,
    help="Objects that form an image's mask for the box metrics: the target class's own boxes / segmentations / "
         "mask file, or any object.")


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
@option("--image-path", "image_path", hidden=("--image_path",), required=True, callback=_existing_file("image"),
        metavar="FILE", help="The image to explain (any PIL format).")
@checkpoint_option("--checkpoint", "checkpoint", hidden=("--model-path", "--model_path"), help="Checkpoint to explain.")
@model_options
@out_option("Output folder for the PNGs.", default="./attention_viz", hidden=("--output-dir", "--output_dir"))
@option("--layer", type=int, default=-1, show_default=True,
        help="Attention layer for the patch attention map (negative counts from the last).")
@option("--head", type=int, default=None, help="One attention head [default: mean of the heads].")
@option("--target-class", metavar="INDEX|NAME", default=None,
        help="Class to explain: an index or one of the model's class names, e.g. 281 or 'tabby cat' [default: predicted].")
@option("--gradcam-layer", default=None, metavar="NAME", help="Module name for Grad-CAM [default: chosen for the model].")
@method_option_option
@option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Overlay opacity.")
@colormap_option
@option("--save-maps", is_flag=True, help="Also write maps.npz (float32 maps at the image's size, unnormalised).")
@multi_attention_options
@option("--support", cls=SpaceSeparated, multiple=True, metavar="IMAGE...", callback=_existing_file("support image"),
        help="Support images of the query's class (few-shot, multi-attention models): reconstruction attention, "
             "prototype target.")
def visualize(image_path, checkpoint, arch, factory, patch_size, image_size, resize, embed_dim, depth, num_heads,
              device, trust_checkpoint, out, layer, head, target_class, gradcam_layer, method_options, alpha, colormap, save_maps,
              use_mab, use_ocab, use_drff, window_size, support) -> None:
    """One image: Grad-CAM and patch attention overlays and a patch grid (the original guide's flow)."""
    from .visualize import visualize as run_visualize

    if arch is None and factory is None and not _carries_arch(checkpoint):
        arch = "vit_small"
    kwargs = _overrides(embed_dim=embed_dim, depth=depth, num_heads=num_heads, use_mab=use_mab, use_ocab=use_ocab,
                        use_drff=use_drff, window_size=window_size)
    check_model(arch, factory, checkpoint, patch_size=patch_size, image_size=image_size, model_kwargs=kwargs)
    run_visualize(image_path, arch=arch, factory=factory, checkpoint=checkpoint, patch_size=patch_size,
                  image_size=image_size, resize=resize, output_dir=out, layer=layer, head=head,
                  target_class=target_class, gradcam_layer=gradcam_layer, method_options=method_options, device=device, alpha=alpha, colormap=colormap, save_maps=save_maps,
                  trust_checkpoint=trust_checkpoint, log=click.echo, support=support, model_kwargs=kwargs)


@main.command(short_help="Audit every method over a labelled image set (exit 0 pass, 1 fail).")
@option("--data", required=True, callback=_data, metavar="PATH",
        help="Manifest (.jsonl/.csv), COCO .json, or a folder root/<class>/<image> "
             "(or root/{train,val,test}/<class>/<image>).")
@checkpoint_option("--checkpoint", "checkpoint", hidden=("--model-path", "--model_path"))
@model_options
@out_option("Output folder (results.json, results.csv, junit.xml, token_maps.npz, report.html).", required=True)
@methods_option
@method_option_option
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None, help="Thresholds TOML file.")
@click.option("--fail-under", multiple=True, metavar="METHOD.METRIC=V", help="Fail when the mean is below V (repeatable).")
@click.option("--max-drop", multiple=True, metavar="METHOD.METRIC=D", help="Fail when worse than --baseline by more than D.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="An earlier results.json to compare with.")
@gate_options
@click.option("--class-map", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Data-set class name -> model class index (JSON {\"cat\": 281} or CSV 'cat,281') "
                   "[default: match the model's own class names].")
@batch_size_option
@click.option("--save-maps", is_flag=True, help="Also write maps.npz: float32 maps at each image's resolution.")
@click.option("--mean", callback=_floats3, default=None, metavar="R,G,B", help="Normalisation mean [default: model's, else ImageNet].")
@click.option("--std", callback=_floats3, default=None, metavar="R,G,B", help="Normalisation std [default: model's, else ImageNet].")
@few_shot_options
@click.option("--engine", type=click.Choice(["auto", "local", "processes", "ray"]), default="auto", show_default=True,
              help="What runs the batches. local: this process (threads); processes: forked CPU workers, each "
                   "decoding, passing and scoring whole batches on its share of the torch threads (Linux, "
                   "--device cpu); auto: processes for 8 or more batches on a CPU with 2+ threads, else local; "
                   "ray: a Ray Data actor pool (pip install 'attention-auditor[ray]'; RAY_ADDRESS selects a cluster).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (processes, auto) or Ray actors [default: one per torch thread, at most 4; "
                   "ray: 2].")
@click.option("--amp", is_flag=True, help="Mixed precision: forward passes in float16 (CUDA) / bfloat16 (CPU); "
                                          "maps are computed from the recorded tensors in float32.")
@_mask_classes
@outside_root_option
@click.option("--overwrite", is_flag=True, help="Replace the results already in --out.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out (same settings; finished images are kept).")
@click.option("--no-report", is_flag=True, help="Do not write report.html (render it later with `auditor report`).")
@colormap_option
@gallery_option
@score_size_option
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
def run(data, checkpoint, arch, factory, patch_size, image_size, resize, embed_dim, depth, num_heads, device,
        trust_checkpoint, out, methods, method_options, thresholds, fail_under, max_drop, baseline, max_nan,
        max_errors, gate_on,
        allow_different_data, class_map, mask_classes, batch_size, save_maps, mean, std,
        split, target, episodes, n_way, k_shot, n_query, seed, engine, workers, amp, allow_outside_root, overwrite,
        resume, no_report, colormap, gallery, score_size, faithfulness, faithfulness_steps, faithfulness_baseline, use_mab, use_ocab,
        use_drff, window_size) -> None:
    """Audit every method over a labelled image set; exit 0 when all thresholds hold, 1 when not."""
    from .results import format_summary
    from .runner import run_audit

    if arch is None and factory is None and not _carries_arch(checkpoint):
        raise click.UsageError("give the model: --arch NAME or --model package.module:factory "
                               "(or a --checkpoint demo:NAME / pypi:NAME, which carries its architecture)")
    if engine == "local" and "--workers" in _given("workers"):
        raise click.UsageError("--workers is the number of worker processes or Ray actors: --engine local has none")
    model_kwargs = _overrides(embed_dim=embed_dim, depth=depth, num_heads=num_heads, use_mab=use_mab, use_ocab=use_ocab,
                              use_drff=use_drff, window_size=window_size)
    check_model(arch, factory, checkpoint, patch_size=patch_size, image_size=image_size, model_kwargs=model_kwargs)
    if checkpoint is None and (arch is not None or str(factory).startswith("timm:")):  # hf: folders hold weights
        click.echo(f"Warning: no --checkpoint: {arch or factory} is audited with its untrained (random) weights, so "
                   "the maps show the architecture's prior only.", err=True)
    result = run_audit(data, split=split, episodes=_few_shot(episodes, n_way, k_shot, n_query, seed), seed=seed,
                       amp=amp, engine=engine, workers=workers, out=out, arch=arch, factory=factory,
                       checkpoint=checkpoint, methods=methods, method_options=method_options,
                       thresholds=thresholds, fail_under=fail_under, max_drop=max_drop, baseline=baseline,
                       max_nan=max_nan, max_errors=max_errors, gate_on=gate_on,
                       allow_different_data=allow_different_data, class_map=class_map, batch_size=batch_size,
                       save_maps=save_maps, device=device, image_size=image_size, resize=resize, mean=mean, std=std,
                       target=target,
                       allow_outside_root=allow_outside_root, overwrite=overwrite,
                       trust_checkpoint=trust_checkpoint, patch_size=patch_size,
                       model_kwargs=model_kwargs, progress=_Progress(), report=False, resume=resume,
                       faithfulness=faithfulness, faithfulness_steps=faithfulness_steps,
                       faithfulness_baseline=faithfulness_baseline, mask_classes=mask_classes, score_size=score_size)
    click.echo(format_summary(result.data))
    click.echo(f"Results: {result.out / 'results.json'}")
    if not no_report:
        from .report import render_report

        click.echo(f"Report: {render_report(result, cmap=colormap, gallery=gallery)}")
    sys.exit(0 if result.passed else 1)


@main.command(short_help="Re-render report.html from results.json or comparison.json (no model needed).")
@click.argument("results", callback=_results_json, metavar="RESULTS_JSON")
@option("--out", default=None, callback=_report_out, metavar="FILE|FOLDER",
        help="HTML file, or a folder for report.html [default: report.html beside RESULTS_JSON].")
@colormap_option
@option("--sort-by", default=None, metavar="METHOD.METRIC", help="Gallery order, worst first [default: first method's pointing game].")
@gallery_option
def report(results, out, colormap, sort_by, gallery) -> None:
    """Re-render report.html from an audit's results.json (with its token_maps.npz) or a compare's
    comparison.json; no model is built or run."""
    from .report import render_report
    from .report.build import is_comparison, rerender_comparison

    if is_comparison(results):
        if sort_by:
            raise click.UsageError(f"--sort-by {sort_by} orders an audit's gallery; a comparison's report is "
                                   "ordered by how much A and B disagree (choose the order in the page)")
        click.echo(f"Report: {rerender_comparison(results, out=out, cmap=colormap)}")
        return
    click.echo(f"Report: {render_report(results, out=out, cmap=colormap, sort_by=sort_by, gallery=gallery)}")


@main.command(short_help="Draw one image's card (original, overlays, metrics) from an audit's results.")
@click.argument("image_id", metavar="ID")
@option("--results", required=True, callback=_results_json, metavar="RESULTS_JSON",
        help="The audit's results.json (its folder holds token_maps.npz).")
@option("--out", default=None, metavar="FILE|FOLDER",
        help="HTML file, or a folder for <ID>.html [default: cards/<ID>.html beside RESULTS_JSON].")
@colormap_option
def show(image_id, results, out, colormap) -> None:
    """Write the card of image ID (an id from results.csv) as a small self-contained HTML page:
    for images the report's gallery does not show."""
    from .report.card import render_card

    click.echo(f"Card: {render_card(results, image_id, out=out, cmap=colormap)}")


def _model_spec(name: str | None, checkpoint: str | None) -> dict:
    """``--model-a`` is an architecture name, or ``package.module:factory`` when it holds a colon."""
    spec = {"factory": name} if name and ":" in name else {"arch": name}
    return {**spec, "checkpoint": checkpoint}


@main.command(short_help="Two checkpoints on the same images, with a regression gate.")
@option("--results-a", callback=_results_json, default=None, metavar="RESULTS_JSON",
        help="A's results.json (compare two finished audits).")
@option("--results-b", callback=_results_json, default=None, metavar="RESULTS_JSON", help="B's results.json.")
@option("--data", default=None, callback=_data, metavar="PATH",
        help="Data set to audit both models on (with --model-a / --model-b).")
@option("--model-a", default=None, metavar="ARCH|PKG.MOD:FN", help="Model A: a built-in architecture or a factory.")
@checkpoint_option("--checkpoint-a", help="Model A's checkpoint.")
@option("--model-b", default=None, metavar="ARCH|PKG.MOD:FN", help="Model B (the candidate).")
@checkpoint_option("--checkpoint-b", help="Model B's checkpoint.")
@out_option("Output folder: a/, b/, comparison.json, junit.xml, report.html.", required=True)
@click.option("--max-drop", multiple=True, metavar="METHOD.METRIC=D",
              help="Fail (exit 1) when B's paired mean is worse than A's by more than D (repeatable).")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None,
              help="B's own checks (TOML; max_drop entries compare B with A).")
@click.option("--fail-under", multiple=True, metavar="METHOD.METRIC=V", help="Fail when B's mean is below V (repeatable).")
@gate_options
@click.option("--class-map", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Data-set class name -> model class index, for both models (see `auditor run --help`).")
@methods_option
@method_option_option
@image_size_option
@resize_option
@batch_size_option
@device_option
@few_shot_options
@_mask_classes
@outside_root_option
@click.option("--overwrite", is_flag=True, help="Replace results already in --out/a and --out/b.")
@trust_option
@colormap_option
def compare(results_a, results_b, data, model_a, checkpoint_a, model_b, checkpoint_b, out, max_drop, thresholds,
            fail_under, max_nan, max_errors, gate_on, allow_different_data, class_map, mask_classes, methods,
            method_options,
            image_size, resize, batch_size, device, split, target, episodes, n_way, k_shot, n_query, seed, allow_outside_root,
            overwrite, trust_checkpoint, colormap) -> None:
    """Two checkpoints on the same images in one report; exit 1 when a check of the gate fails."""
    from .compare import compare_models, compare_results, format_comparison

    if results_a or results_b:
        if not (results_a and results_b) or data or model_a or model_b:
            raise click.UsageError("give either --results-a and --results-b, or --data with --model-a and --model-b")
        ignored = _given("split", "target", "episodes", "n_way", "k_shot", "n_query", "class_map", "mask_classes",
                         "method_options", "resize")
        if ignored:
            raise click.UsageError(f"{', '.join(ignored)} apply when compare runs the audits (--data with "
                                   "--model-a / --model-b), not to finished results")
        comp = compare_results(results_a, results_b, out=out, max_drop=max_drop, thresholds=thresholds,
                               fail_under=fail_under, max_nan=max_nan, max_errors=max_errors, gate_on=gate_on,
                               allow_different_data=allow_different_data, cmap=colormap, seed=seed)
    else:
        if not (data and (model_a or _carries_arch(checkpoint_a)) and (model_b or _carries_arch(checkpoint_b))):
            raise click.UsageError("give --data, --model-a and --model-b (or --results-a and --results-b)")
        for label, name, ckpt in (("A", model_a, checkpoint_a), ("B", model_b, checkpoint_b)):  # both before any work
            spec = _model_spec(name, ckpt)
            check_model(spec.get("arch"), spec.get("factory"), ckpt, image_size=image_size, label=f"model {label}: ")
        comp = compare_models(data, out=out, model_a=_model_spec(model_a, checkpoint_a),
                              model_b=_model_spec(model_b, checkpoint_b), max_drop=max_drop, thresholds=thresholds,
                              fail_under=fail_under, max_nan=max_nan, max_errors=max_errors, gate_on=gate_on,
                              class_map=class_map, cmap=colormap,
                              methods=methods, method_options=method_options, image_size=image_size,
                              resize=resize, batch_size=batch_size, device=device,
                              target=target, allow_outside_root=allow_outside_root, overwrite=overwrite,
                              trust_checkpoint=trust_checkpoint, split=split, seed=seed,
                              episodes=_few_shot(episodes, n_way, k_shot, n_query, seed), mask_classes=mask_classes)
    click.echo(format_comparison(comp.data))
    click.echo(f"Report: {comp.out / 'report.html'}")
    sys.exit(0 if comp.passed else 1)


@main.command(short_help="Offline demo: a clean vs a shortcut checkpoint, both bundled.")
@out_option("Output folder (data/, a/, b/, report.html).", default="demo-audit")
@option("-n", "--num-images", "n", type=click.IntRange(min=4), default=100, show_default=True,
        help="Generated images (at least 4).")
@device_option
@colormap_option
def demo(out, n, device, colormap) -> None:
    """Offline demo: audit a clean and a shortcut checkpoint (both bundled) on generated images."""
    from .compare import format_comparison
    from .demo import gate_line, run_demo

    comp = run_demo(out, n=n, device=device, log=click.echo, cmap=colormap)
    click.echo(format_comparison(comp.data))
    click.echo("\n" + gate_line(comp))
    click.echo(f"Open the report: {comp.out / 'report.html'}")


@main.command("models")
def list_models_cmd() -> None:
    """List the built-in architectures: family, what each needs, which methods apply."""
    from .catalog import models_table

    click.echo(models_table())


@main.command("methods")
def list_methods_cmd() -> None:
    """List the attention / saliency methods: what each shows and what it needs."""
    from .catalog import methods_table

    click.echo(methods_table())


@main.command("init", short_help="Write a starter audit.toml, a pytest audit and a CI workflow.")
@option("--out", "out", default=".", show_default=True, callback=_out_dir, metavar="FOLDER",
        help="Project folder to write into.")
@option("--data", default="data/manifest.jsonl", show_default=True, help="The data set the audit reads.")
@option("--checkpoint", default="demo:clean", show_default=True, help="The checkpoint the audit gates.")
@option("--arch", default=None, help="Architecture (not needed for demo:/pypi: checkpoints).")
@click.option("--force", is_flag=True, help="Replace files that already exist.")
def init(out, data, checkpoint, arch, force) -> None:
    """Write audit.toml (thresholds), tests/test_attention_audit.py (the auditor_run fixture) and
    .github/workflows/attention-audit.yml (runs the audit, keeps report.html and junit.xml)."""
    from .init import write_starter

    for path in write_starter(out, data=data, checkpoint=checkpoint, arch=arch, force=force):
        click.echo(f"Wrote {path}")
    click.echo("Next: edit audit.toml's thresholds, then run `pytest tests/test_attention_audit.py`.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
