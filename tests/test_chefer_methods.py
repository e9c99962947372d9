"""``generic_attention`` and ``transformer_attribution`` equal hila-chefer's reference code.

Reference values: tests/data/chefer_reference.npz, written by tests/data/make_chefer_reference.py
in a throwaway venv with torch==2.14.1, timm==1.0.31, numpy==2.4.6, safetensors==0.8.0,
einops==0.8.2 and hila-chefer/Transformer-Explainability@c3e578f (``ViT_LRP.py``,
``ViT_new.py``, ``ViT_explanation_generator.py``), hila-chefer/Transformer-MM-Explainability@58eaea8
(``Transformer_MM_explainability_ViT.ipynb``'s ``generate_relevance``), also stored in the npz
under ``versions``. The reference models load tests/data/timm_vit_tiny.safetensors strictly
(embed 48, depth 2, 3 heads, 64 x 96, 5 classes); every LayerNorm eps 1e-6 as ours (the
reference's final norm defaults to 1e-5); ``.cuda()`` made a no-op. Four images, one at a time
(the reference explains one image), a given class each and the predicted class.

Float32 vs float64: the reference's LRP divides by sums that can be near zero; its own float32
and float64 maps differ by up to 9.3e-5 x max on these images (generic attention 9e-7). So
each method is compared in both: our float32 run vs the reference's float32 run, and our
float64 run (model and input ``.double()``) vs the reference's float64 run.

Tolerances: max |ours - reference| <= 1e-5 x max |reference| (float32) and 1e-6 (float64).
Observed (torch 2.13 CPU): float32 generic_attention 1.9e-7, transformer_attribution 3.2e-7;
float64 <= 2.9e-8 (the map is returned as float32, whose rounding that is).

Prefix tokens: DeiT-distilled (CLS + distillation token, 5 classes) and DINOv2 with 4 registers
(LayerScale, headless: the CLS-norm target) from tests/data/vit_<NAME>.safetensors, float64:
the reference's rules on timm's modules (see the script): observed <= 8.9e-8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import UsageError
from auditor.methods import build_methods, compute_maps, create_method, describe_method, default_methods
from auditor.methods.lrp import clone_merge, linear_zplus, safe_divide
from auditor.models import build_model, create_model, load_checkpoint

from conftest import tiny_vit

DATA = Path(__file__).resolve().parent / "data"
CHEFER = ["generic_attention", "transformer_attribution"]
# relative to the map's max. float32: 3e-5, as LRP relevance through a ViT differs by ~1.1e-5 between
# CPUs (the reference machine and a 2026-12 CI VM); float64 proves the method's equality to 1e-6
TOL = {"f32": 3e-5, "f64": 1e-6}
DTYPES = {"f32": torch.float32, "f64": torch.float64}
VARIANTS = {"timm_deit_distilled": ((64, 96), (4, 6), 2), "timm_dinov2_reg": ((56, 56), (4, 4), 5)}


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(DATA / "chefer_reference.npz") as f:
        return {k: f[k] for k in f.files}


def vit(dtype: torch.dtype) -> torch.nn.Module:
    model = create_model("vit_small", embed_dim=48, depth=2, num_heads=3, image_size=(64, 96), patch_size=16,
                         num_classes=5)
    report = load_checkpoint(model, DATA / "timm_vit_tiny.safetensors")
    assert not report.missing and not report.unexpected
    return model.to(dtype).eval()


def inputs(levels: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy((levels.astype(np.float32) - 8.0) / 4.0).to(dtype)


def assert_matches(ours: torch.Tensor, want: np.ndarray, tol: float) -> None:
    got = ours.reshape(want.shape).double().numpy()
    err = np.abs(got - want).max()
    assert err <= tol * np.abs(want).max(), (err, np.abs(want).max())


def test_reference_records_versions_and_commits(ref):
    versions = list(ref["versions"])
    assert "torch==2.14.1" in versions
    assert "Transformer-Explainability@c3e578f76b954e8528afeaaee26de3f07e3fe559" in versions
    assert "Transformer-MM-Explainability@58eaea85ac9c34aff052f368514b35d2e4c8dd3c" in versions


@pytest.mark.parametrize("tag", ["f32", "f64"])
@pytest.mark.parametrize("target", ["labels", "predicted"])
def test_both_methods_equal_the_reference_on_a_vit(ref, tag, target):
    dtype = DTYPES[tag]
    classes = ref["base/labels"].tolist() if target == "labels" else "predicted"
    res = compute_maps(vit(dtype), inputs(ref["base/levels"], dtype), build_methods(CHEFER), target=classes)
    assert not res.skipped
    assert res.targets == (ref["base/labels"] if target == "labels" else ref[f"base/{tag}/predicted_classes"]).tolist()
    for name in CHEFER:
        assert res.maps[name].maps.shape == (4, 4, 6)
        assert_matches(res.maps[name].maps, ref[f"base/{tag}/{target}/{name}"], TOL[tag])


@pytest.mark.parametrize("tag", ["f32", "f64"])
def test_transformer_attribution_start_layer_equals_the_reference(ref, tag):
    dtype = DTYPES[tag]
    method = create_method("transformer_attribution", start_layer=1)
    res = compute_maps(vit(dtype), inputs(ref["base/levels"], dtype), [method], target=ref["base/labels"].tolist())
    assert_matches(res.maps["transformer_attribution"].maps, ref[f"base/{tag}/labels/transformer_attribution_start1"],
                   TOL[tag])
    # the first layer matters: start_layer 0 gives another map
    full = ref[f"base/{tag}/labels/transformer_attribution"]
    assert np.abs(res.maps["transformer_attribution"].maps.reshape(full.shape).double().numpy() - full).max() > 1e-3


@pytest.mark.parametrize("name", VARIANTS)
def test_prefix_tokens_join_the_rollout_but_never_the_map(ref, name):
    size, grid, prefix = VARIANTS[name]
    model = build_model("vit_small", checkpoint=DATA / f"vit_{name}.safetensors", image_size=size, embed_dim=32,
                        depth=2, num_heads=2).model.double().eval()
    assert model.num_prefix_tokens == prefix == int(ref[f"{name}/prefix"])
    target = [1, 3] if model.num_classes else None  # headless: the CLS norm, as the reference script
    res = compute_maps(model, inputs(ref[f"{name}/levels"], torch.float64), build_methods(CHEFER), target=target)
    assert res.target_kind == ("label" if model.num_classes else "cls-norm")
    for method in CHEFER:
        assert res.maps[method].maps.shape == (2, *grid)  # patch columns only
        assert_matches(res.maps[method].maps, ref[f"{name}/{method}"], TOL["f64"])
    start = res.maps["transformer_attribution"].info["start_relevance"]
    assert start == ("one-hot at the head" if model.num_classes else "gradient x input at the final tokens")


def test_both_share_the_single_forward_and_backward_with_gradcam():
    model = tiny_vit(num_classes=4).eval()
    counts = {"forward": 0, "backward": 0}
    model.register_forward_hook(lambda *a: counts.__setitem__("forward", counts["forward"] + 1))
    model.head.register_full_backward_pre_hook(lambda *a: counts.__setitem__("backward", counts["backward"] + 1))
    res = compute_maps(model, torch.randn(3, 3, 32, 32), build_methods(CHEFER + ["gradcam"]), target=[0, 1, 2])
    assert counts == {"forward": 1, "backward": 1}
    assert set(res.maps) == set(CHEFER + ["gradcam"])


def test_batched_maps_equal_one_image_at_a_time(ref):
    """The reference explains one image; our per-image sums (LRP's residual rule) keep images apart."""
    model, x = vit(torch.float64), inputs(ref["base/levels"], torch.float64)
    labels = ref["base/labels"].tolist()
    batch = compute_maps(model, x, build_methods(CHEFER), target=labels).maps
    for i in range(len(labels)):
        one = compute_maps(model, x[i:i + 1], build_methods(CHEFER), target=labels[i:i + 1]).maps
        for name in CHEFER:
            torch.testing.assert_close(batch[name].maps[i:i + 1], one[name].maps, rtol=1e-6, atol=1e-9)


def test_models_without_what_they_need_are_skipped_with_the_reason():
    from test_reference_values import SmallCNN

    res = compute_maps(SmallCNN().eval(), torch.randn(1, 3, 32, 32), build_methods(CHEFER + ["gradcam"]), target=[0])
    assert set(res.skipped) == set(CHEFER) and "gradcam" in res.maps
    assert "attention" in res.skipped["generic_attention"]
    res = compute_maps(vit(torch.float32), torch.randn(1, 3, 64, 96),
                       [create_method("transformer_attribution", start_layer=2)], target=[0])
    assert "start_layer 2 does not exist: the model has 2 blocks" in res.skipped["transformer_attribution"]


def test_attention_weights_off_the_score_path_are_refused_not_misread():
    """OpenCLIP's MultiheadAttention returns its weights beside the product it uses: no gradient reaches them."""
    from test_adapters import FakeOpenClipTower

    model = FakeOpenClipTower().eval()
    res = compute_maps(model, torch.randn(2, 3, 8, 12), build_methods(CHEFER + ["rollout"]))
    assert "rollout" in res.maps
    assert "not on the path from input to score" in res.skipped["generic_attention"]
    assert "timm / DINO layout" in res.skipped["transformer_attribution"]
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_options_costs_and_default_list():
    with pytest.raises(UsageError, match="start_layer must be >= 0"):
        build_methods(["transformer_attribution"], ["transformer_attribution.start_layer=-1"])
    assert not set(CHEFER) & set(default_methods())  # asked for by name
    assert describe_method("generic_attention")["cost"].startswith("1 forward + 1 backward per batch, shared")
    assert "LRP sweep" in describe_method("transformer_attribution")["cost"]
    assert describe_method("transformer_attribution")["options"]["start_layer"]["default"] == 0


def reference_safe_divide(a, b):
    """modules/layers_ours.py's ``safe_divide``, verbatim."""
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).type(den.type()) * 1e-9
    return a / den * b.ne(0).type(b.type())


def test_rules_written_for_speed_give_the_reference_formulas_bit_for_bit():
    b = torch.tensor([2.0, -3.0, 0.0, -1e-9, 1e-9, 1e-12, -5e-10, 7.5])
    a = torch.tensor([1.0, 1.0, 5.0, 1.0, 1.0, -2.0, 3.0, 0.0])
    assert torch.equal(safe_divide(a, b), reference_safe_divide(a, b))
    assert safe_divide(a, b)[2] == 0 and safe_divide(a, b)[3] == 1e9  # b == 0; b + 1e-9 == 0 -> 1e-9
    g = torch.Generator().manual_seed(0)
    x, w, r = torch.randn(2, 5, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(2, 5, 4, generator=g)
    x[0, 0, :3] = 0
    px, nx, pw, nw = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    s = reference_safe_divide(r, px @ pw.T + nx @ nw.T)
    assert torch.equal(linear_zplus(x, w, r), px * (s @ pw) + nx * (s @ nw))  # ViT_LRP Linear.relprop, alpha 1
    r1 = torch.randn(2, 5, 6, generator=g)
    assert torch.equal(clone_merge(x, r1, 2 * r1), x * (reference_safe_divide(r1, x) + reference_safe_divide(2 * r1, x)))
