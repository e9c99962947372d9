"""On a GPU every method gives the CPU's maps, and an audit the CPU's numbers.

Skipped without CUDA (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``. TF32 is switched off for the comparison, so the
two devices differ by float32 rounding alone; seeded methods (SmoothGrad's noise, RISE's
masks, the random baseline) must draw the same numbers on either device.
"""

from __future__ import annotations

import pytest
import torch

from auditor.methods import create_method, list_methods
from auditor.methods.engine import compute_maps
from auditor.models import create_model

from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

def _vit(**fork):
    return create_model("vit_small", **TINY, image_size=32, patch_size=8, num_classes=4, **fork)


LABELS = [0, 1, 2, 3]
# (model, target): the fork's CLS token bypasses its MAB / OCAB blocks, so its maps explain
# the patch tokens.
MODELS = {
    "vit": (_vit, LABELS),
    "mab_drff": (lambda: _vit(use_mab=True, use_drff=True, window_size=2), "patch-norm"),
    "ocab": (lambda: _vit(use_ocab=True, window_size=2), "patch-norm"),
    "cnn": (lambda: SmallCNN(), LABELS),
}


class SmallCNN(torch.nn.Module):
    """Two convolutions and a BatchNorm (EfficientNet-Lite's 1,280 channels make Score- and
    Ablation-CAM take minutes on the CPU half of the comparison)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                      nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _maps(model, target, x, support, device, amp=False):
    torch.manual_seed(0)
    # Seeded draws (SmoothGrad's noise, a noise baseline) must not depend on the device.
    options = {"integrated_gradients": {"baseline": "noise"}}
    methods = [create_method(n, **options.get(n, {})) for n in list_methods()]
    res = compute_maps(model.to(device), x.to(device), methods, target=target,
                       support=None if support is None else support.to(device), amp=amp)
    return {k: v.maps.float().cpu() for k, v in res.maps.items()}, res.skipped


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("support", [False, True], ids=["query", "with-support"])
def test_every_method_gives_the_cpu_maps_on_cuda(family, support):
    torch.manual_seed(0)
    build, target = MODELS[family]
    model = build().eval()
    x = torch.randn(4, 3, 32, 32)
    sup = torch.randn(3, 3, 32, 32) if support else None
    cpu, skipped_cpu = _maps(model, target, x, sup, "cpu")
    gpu, skipped_gpu = _maps(model, target, x, sup, "cuda")
    assert set(cpu) == set(gpu) and skipped_cpu == skipped_gpu
    assert cpu, "no method applied"
    bad = {}
    for name in cpu:
        scale = cpu[name].abs().amax().clamp_min(1e-12)
        err = float(((cpu[name] - gpu[name]).abs().amax() / scale))
        if not err <= 1e-3:
            bad[name] = err
    assert not bad, f"maps differ between CPU and CUDA (max abs diff / max |map|): {bad}"


def test_amp_on_cuda_keeps_the_float32_maps():
    torch.manual_seed(0)
    model = _vit().eval()
    x = torch.randn(4, 3, 32, 32)
    full, _ = _maps(model, LABELS, x, None, "cuda")
    half, _ = _maps(model, LABELS, x, None, "cuda", amp=True)
    low = {}
    for name in full:
        a, b = full[name].flatten(1), half[name].flatten(1)
        corr = torch.nn.functional.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1)
        if not bool((corr > 0.98).all()):
            low[name] = corr.tolist()
    assert not low, f"float16 maps far from float32 ones (centred cosine per image): {low}"


def test_an_audit_on_cuda_gives_the_cpu_numbers(tmp_path):
    from auditor.datasets.synthetic import write_dataset
    from auditor.runner import run_audit

    data = write_dataset(tmp_path / "data", 12, seed=3)
    runs = {d: run_audit(data, checkpoint="demo:clean", out=tmp_path / d, device=d, report=False)
            for d in ("cpu", "cuda")}
    cpu, gpu = runs["cpu"].summary, runs["cuda"].summary
    assert set(cpu) == set(gpu)
    for method, metrics in cpu.items():
        for metric, s in metrics.items():
            g = gpu[method][metric]
            assert (s.n, s.n_nan) == (g.n, g.n_nan), (method, metric)
            assert g.mean == pytest.approx(s.mean, abs=1e-3, nan_ok=True), (method, metric)
