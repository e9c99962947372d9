"""--amp: the forward runs under autocast, the maps stay float32 and agree with full precision."""

from __future__ import annotations

import numpy as np
import torch

from auditor.methods import compute_maps, create_method
from auditor.runner import run_audit

from conftest import tiny_vit
from test_run import _vit, write_square_set

METHODS = ["gradcam", "cls_attention", "rollout", "input_gradient"]


def test_amp_forward_is_bfloat16_on_cpu_and_maps_agree_with_float32():
    model = tiny_vit(num_classes=5, seed=1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = []
    h = model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    methods = [create_method(n) for n in METHODS]
    full = compute_maps(model, x, methods, target=[0, 1, 2, 3])
    amp = compute_maps(model, x, methods, target=[0, 1, 2, 3], amp=True)
    h.remove()
    assert seen == [torch.float32, torch.bfloat16]  # the second pass really ran in reduced precision
    for name in METHODS:
        a, b = full.maps[name].maps, amp.maps[name].maps
        assert b.dtype == torch.float32 and b.shape == a.shape
        for i in range(4):  # bfloat16 keeps ~3 significant digits: the maps' shapes must agree
            r = np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1]
            assert r > 0.95, (name, i, r)
        assert not torch.equal(a, b)  # and they are not the float32 maps themselves
    torch.testing.assert_close(amp.output, full.output, atol=0.05, rtol=0.05)


def test_run_with_amp_records_it_and_scores_like_float32(tmp_path):
    data = write_square_set(tmp_path / "data", n=8)
    a = run_audit(data, out=tmp_path / "fp32", model=_vit(), methods=["gradcam"])
    b = run_audit(data, out=tmp_path / "amp", model=_vit(), methods=["gradcam"], amp=True)
    assert b.data["settings"]["amp"] == "bfloat16" and "amp" not in a.data["settings"]
    assert b.summary["gradcam"]["pointing_game"].mean == a.summary["gradcam"]["pointing_game"].mean == 1.0


def test_legrad_runs_its_own_pass_under_amp_too():
    """LeGrad's own forward and per-block scores honour --amp (they ran in float32 before)."""
    model = tiny_vit(num_classes=5, seed=1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = []
    h = model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    full = compute_maps(model, x, [create_method("legrad")], target=[0, 1, 2, 3]).maps["legrad"].maps
    seen.clear()
    amp = compute_maps(model, x, [create_method("legrad")], target=[0, 1, 2, 3], amp=True).maps["legrad"].maps
    h.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]  # the shared pass and legrad's own
    assert amp.dtype == torch.float32 and not torch.equal(full, amp)
    for i in range(4):
        assert np.corrcoef(full[i].flatten().numpy(), amp[i].flatten().numpy())[0, 1] > 0.95, i


def test_transformer_attribution_gets_a_float32_pass_of_its_own_under_amp():
    """LRP amplifies bfloat16 rounding (r 0.94 to float32 on a random ViT-S/6): under --amp the method
    is computed from a float32 pass, explaining the classes the autocast pass chose."""
    model = tiny_vit(num_classes=5, seed=1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    names = ["gradcam", "transformer_attribution"]
    full = compute_maps(model, x, [create_method(n) for n in names], target="predicted")
    amp = compute_maps(model, x, [create_method(n) for n in names], target="predicted", amp=True)
    assert list(amp.maps) == names and amp.target_kind == "predicted"
    ta = amp.maps["transformer_attribution"]
    assert torch.equal(ta.maps, full.maps["transformer_attribution"].maps)  # float32, as without --amp
    assert ta.info["target"] == "predicted" and ta.info["precision"].startswith("float32")
    assert not torch.equal(amp.maps["gradcam"].maps, full.maps["gradcam"].maps)  # the rest ran in bfloat16
    alone = compute_maps(model, x, [create_method("transformer_attribution")], target="predicted", amp=True)
    assert torch.equal(alone.maps["transformer_attribution"].maps, ta.maps)
