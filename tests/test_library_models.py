"""A user's library model: ``--model timm:NAME --checkpoint FILE`` and ``--model hf:PATH``.

Reference values were computed once by tests/data/make_library_reference.py with torch==2.14.1,
timm==1.0.31, transformers==5.24.0, grad-cam==1.5.7, numpy==2.4.6 (stored in the npz under
``versions``): the library's own logits, its own attention (transformers
``output_attentions=True``; timm a manual ``softmax(q k^T * scale)``) and pytorch-grad-cam's raw
cam with a reshape transform that drops exactly the prefix tokens.

The routes need their library: these tests skip (saying so) where timm / transformers are not
installed. timm needs torchvision, which does not import beside the project's torch 2.13.0, so
CI never runs the timm half; transformers 5.24 installs and imports beside torch 2.13.0. A
missing library is tested everywhere: exit 2 with the extra to install.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import CheckpointError, UsageError
from auditor.methods import compute_maps, create_method
from auditor.models import build_model
from auditor.models.adapters import adapter_for

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "library_reference.npz"
TARGETS = [1, 3]
needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed "
                                "(pip install 'attention-auditor[timm]'; needs torchvision)")
needs_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                              reason="transformers is not installed (pip install 'attention-auditor[hf]')")
#: transformers folder -> prefix tokens (DeiT: CLS + distillation; Dinov2WithRegisters: CLS + 4 registers)
HF = {"vit": 1, "deit": 2, "dinov2": 1, "dinov2_reg": 5, "clip": 1}


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def pattern_input(shape) -> torch.Tensor:
    """make_vit_variants_reference.pattern_levels, as float inputs ``(u - 8) / 4``."""
    from test_vit_variants import pattern_levels

    return torch.from_numpy((pattern_levels(tuple(int(s) for s in shape)).astype(np.float32) - 8.0) / 4.0)


def max_diff(a, b) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("spec,extra", [("timm:test_vit", "timm"), ("hf:some/folder", "hf")])
def test_a_missing_library_is_a_usage_error_naming_the_extra(spec, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, {"timm": "timm", "hf": "transformers"}[extra], None)  # import fails
    with pytest.raises(UsageError, match=rf"pip install 'attention-auditor\[{extra}\]'"):
        build_model(factory=spec)


def test_the_cli_exits_2_when_the_library_is_missing(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from auditor.cli import main

    monkeypatch.setitem(sys.modules, "timm", None)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    result = CliRunner().invoke(main, ["visualize", "--image_path", str(img), "--model", "timm:test_vit",
                                       "--output_dir", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "attention-auditor[timm]" in result.output and "Traceback" not in result.output


def _check_maps(model, x, ref, key: str, prefix: int, grid: tuple[int, int], classes: bool) -> None:
    with torch.no_grad():
        assert max_diff(model(x), ref[f"{key}/logits"]) <= 1e-5
    cls_rows = ref[f"{key}/cls_attention"]  # L x B x heads x T
    for layer in range(cls_rows.shape[0]):
        res = compute_maps(model, x, [create_method("cls_attention", layer=layer)]).maps["cls_attention"]
        want = cls_rows[layer][..., prefix:].reshape(*cls_rows.shape[1:3], *grid)
        assert max_diff(res.extras["per_head"], want) <= 1e-5
    target = TARGETS[:x.shape[0]] if classes else None
    cam = compute_maps(model, x, [create_method("gradcam")], target=target).maps["gradcam"].maps
    want = ref[f"{key}/gradcam_raw"]
    assert cam.shape == want.shape and max_diff(cam, want) <= 1e-4 * np.abs(want).max()


@needs_timm
def test_timm_route_loads_the_checkpoint_and_reads_timm_attention(ref):
    loaded = build_model(factory="timm:test_vit", checkpoint=DATA / "lib_timm_test_vit.safetensors")
    model = loaded.model
    assert type(model).__module__.startswith("timm.") and model.num_classes == 5
    assert adapter_for(model).family == "vit" and adapter_for(model).prefix_tokens() == 1
    assert loaded.checkpoint.sha256 and model.blocks[0].attn.fused_attn == type(model.blocks[0].attn)(
        8, num_heads=2).fused_attn  # the pass restored timm's own switch
    x = pattern_input(ref["timm_test_vit/native/shape"])
    _check_maps(model, x, ref, "timm_test_vit/native", 1, (10, 10), True)


@needs_timm
def test_timm_swin_gradcam_equals_pytorch_grad_cam_nhwc(ref):
    import timm

    from auditor.models import load_checkpoint

    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, embed_dim=16,
                             depths=(1, 1), num_heads=(1, 2), window_size=4, img_size=(32, 48)).eval()
    load_checkpoint(swin, DATA / "lib_timm_swin.safetensors")
    x = pattern_input(ref["timm_swin/native/shape"])
    res = compute_maps(swin, x, [create_method("gradcam"), create_method("cls_attention")], target=TARGETS)
    assert res.maps["gradcam"].info["layer"] == "layers.1.blocks.0.norm1"
    want = ref["timm_swin/native/gradcam_raw"]
    assert max_diff(res.maps["gradcam"].maps, want) <= 1e-4 * np.abs(want).max()
    assert "cls_attention" in res.skipped


@needs_hf
@pytest.mark.parametrize("name", HF)
@pytest.mark.parametrize("tag", ["native", "big"])
def test_hf_route_matches_transformers(name, tag, ref):
    model = build_model(factory=f"hf:{DATA / f'hf_{name}'}").model
    prefix = HF[name]
    assert adapter_for(model).family == "hf" and adapter_for(model).prefix_tokens() == prefix
    shape = ref[f"hf_{name}/{tag}/shape"]
    grid = (int(shape[2]) // 8, int(shape[3]) // 8)
    if tag == "big":
        assert grid == (30, 20)
    _check_maps(model, pattern_input(shape), ref, f"hf_{name}/{tag}", prefix, grid, name in ("vit", "deit"))


@needs_hf
def test_hf_route_refuses_a_folder_without_config_or_with_missing_weights(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        build_model(factory=f"hf:{tmp_path}")
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "vit"
    shutil.copytree(DATA / "hf_vit", folder)
    sd = load_file(str(folder / "model.safetensors"))
    sd = {k: v for k, v in sd.items() if "layers.1.attention" not in k and "layer.1.attention" not in k}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing keys"):
        build_model(factory=f"hf:{folder}")
    with pytest.raises(UsageError, match="drop --checkpoint"):
        build_model(factory=f"hf:{DATA / 'hf_vit'}", checkpoint=DATA / "lib_timm_swin.safetensors")


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                    reason="open_clip is not installed (pip install open_clip_torch; needs torchvision)")
def test_openclip_image_tower_through_a_factory(tmp_path, monkeypatch):
    """OpenCLIP's tower, given as ``--model package.module:factory``: its nn.MultiheadAttention is
    made to return per-head probabilities; reference: the same modules called with
    ``need_weights=True, average_attn_weights=False`` (tests/data/make_openclip_reference.py,
    torch 2.14.1, open_clip_torch 3.3.0, grad-cam 1.5.7)."""
    (tmp_path / "tower.py").write_text(
        "from open_clip.transformer import VisionTransformer\n"
        "def build():\n"
        "    return VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0,"
        " output_dim=16)\n")
    monkeypatch.chdir(tmp_path)
    loaded = build_model(factory="tower:build", checkpoint=DATA / "lib_openclip_vit.safetensors")
    model = loaded.model
    assert adapter_for(model).family == "open_clip" and adapter_for(model).headless()
    with np.load(DATA / "openclip_reference.npz") as f:
        ref = {f"openclip/{k}": f[k] for k in f.files}
    _check_maps(model, pattern_input(ref["openclip/shape"]), ref, "openclip", 1, (4, 4), False)


@needs_hf
def test_hf_swin_gradcam_reads_the_last_stage_tokens():
    """transformers Swin (no CLS token, windows): Grad-CAM on the last block's layernorm_before,
    tokens on the last stage's 4 x 6 grid of a 32 x 48 input, equal to pytorch-grad-cam's
    (tests/data/make_hf_swin_reference.py, transformers 5.24.0, grad-cam 1.5.7)."""
    model = build_model(factory=f"hf:{DATA / 'hf_swin'}").model
    with np.load(DATA / "hf_swin_reference.npz") as f:
        ref = {k: f[k] for k in f.files}
    x = pattern_input(ref["shape"])
    with torch.no_grad():
        assert max_diff(model(x), ref["logits"]) <= 1e-5
    res = compute_maps(model, x, [create_method("gradcam"), create_method("cls_attention")], target=TARGETS)
    assert res.maps["gradcam"].info["layer"] == "hf.swin.encoder.layers.1.blocks.0.layernorm_before"
    want = ref["gradcam_raw"]
    assert res.maps["gradcam"].maps.shape == want.shape == (2, 4, 6)
    assert max_diff(res.maps["gradcam"].maps, want) <= 1e-4 * np.abs(want).max()
    assert "cls_attention" in res.skipped  # windows and no CLS token


@needs_timm
def test_a_timm_swin_through_the_cli_gives_the_passes_maps(tmp_path, monkeypatch):
    """`auditor run --model FACTORY` on a timm Swin: Grad-CAM on the last stage's norm1 and window
    attention run, cls_attention is skipped naming window_attention, and the token maps in
    token_maps.npz are compute_maps' maps of the same preprocessed images."""
    from click.testing import CliRunner

    from auditor.cli import main
    from auditor.images import load_image
    from auditor.savers import read_map
    from auditor.visualize import input_preprocess

    from test_run import write_square_set

    data = write_square_set(tmp_path / "data", n=4)
    (tmp_path / "swintoy.py").write_text(
        "import timm, torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, num_classes=3, embed_dim=16,\n"
        "                             depths=(1, 1), num_heads=(1, 2), window_size=4, img_size=32)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = CliRunner().invoke(main, ["run", "--data", str(data), "--model", "swintoy:build", "--image-size", "32",
                                  "--methods", "gradcam,window_attention,cls_attention", "--target", "predicted",
                                  "--no-report", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "o"
    settings = __import__("json").loads((out / "results.json").read_text())["settings"]
    assert settings["models"][0]["adapter"]["gradcam_layer"] == "layers.1.blocks.0.norm1"
    assert "window_attention" in settings["skipped_methods"]["cls_attention"]
    import swintoy

    model = swintoy.build().eval()
    pre = input_preprocess(model, 32, None, None)
    ids = sorted(p.name for p in (tmp_path / "data").glob("*.png"))
    x = torch.cat([pre(load_image(tmp_path / "data" / i)) for i in ids])
    res = compute_maps(model, x, [create_method("gradcam"), create_method("window_attention")], target="predicted")
    for method in ("gradcam", "window_attention"):
        for k, image_id in enumerate(ids):
            np.testing.assert_allclose(read_map(out / "token_maps.npz", method, image_id), res.maps[method].maps[k],
                                       rtol=1e-5, atol=1e-6)
