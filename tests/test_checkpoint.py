"""Checkpoint loading: formats, containers, prefixes, safety and clear errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from auditor.errors import CheckpointError
from auditor.models import build_model, create_model, load_checkpoint

from conftest import TINY


def vit(**kw):
    return create_model("vit_small", **{**TINY, "image_size": 32, "patch_size": 8, "num_classes": 5, **kw})


@pytest.fixture
def trained():
    torch.manual_seed(1)
    return vit().eval()


def _variants(sd):
    return {
        "raw.pth": sd,
        "state_dict.pth": {"state_dict": sd},
        "params.pth": {"params": sd, "epoch": 3},
        "module.pth": {"model": {f"module.{k}": v for k, v in sd.items()}},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "weights.safetensors": sd,
    }


def test_every_format_loads_and_gives_identical_logits(trained, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    expected = trained(x)
    sd = trained.state_dict()
    for name, obj in _variants(sd).items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in obj.items()}, path)
        else:
            torch.save(obj, path)
        model = vit().eval()
        report = load_checkpoint(model, path)
        assert report.sha256 and len(report.sha256) == 64
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0, msg=name)


def test_training_script_container_with_numpy_scalars_loads_weights_only(trained, tmp_path):
    path = tmp_path / "fewture.pth"
    torch.save({"params": trained.state_dict(), "val_acc": np.float64(0.81), "val_loss": np.float64(0.5),
                "epoch": 12}, path)
    model = vit()
    assert load_checkpoint(model, path).container == "params"


def test_dino_teacher_keeps_backbone_and_reports_the_projection_head(trained, tmp_path):
    sd = {f"module.backbone.{k}": v for k, v in trained.state_dict().items()}
    sd["module.head.mlp.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "dino.pth"
    torch.save({"teacher": sd, "student": sd}, path)
    report = load_checkpoint(vit(), path)
    assert report.container == "teacher"
    assert report.ignored == ["head.mlp.0.weight"]
    assert any("non-backbone" in n for n in report.notices)


def test_wrong_patch_size_names_the_key_and_shapes(trained, tmp_path):
    path = tmp_path / "p8.pth"
    torch.save({"params": trained.state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(vit(patch_size=16), path)
    msg = str(e.value)
    assert "patch_embed.proj.weight" in msg and "(48, 3, 8, 8)" in msg and "(48, 3, 16, 16)" in msg


def test_missing_and_unexpected_keys_are_listed(trained, tmp_path):
    sd = trained.state_dict()
    sd.pop("norm.weight")
    sd["extra.thing"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): norm.weight.*unexpected 1 key\(s\): extra.thing"):
        load_checkpoint(vit(), path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="Checkpoint not found: nowhere.pth"):
        load_checkpoint(vit(), "nowhere.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(CheckpointError, match="Refused to unpickle"):
        load_checkpoint(vit(), path)
    assert not (tmp_path / "pwned_by_pickle").exists()


@pytest.mark.parametrize("content, fragment", [
    (b"", "Cannot read checkpoint"),
    (b"this is not a checkpoint at all", "Cannot read checkpoint"),
])
def test_garbage_files(tmp_path, content, fragment):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=fragment):
        load_checkpoint(vit(), path)


def test_truncated_checkpoints(trained, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(trained.state_dict(), good)
    bad = tmp_path / "cut.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(vit(), bad)
    st = tmp_path / "cut.safetensors"
    save_file(trained.state_dict(), tmp_path / "good.safetensors")
    st.write_bytes((tmp_path / "good.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(vit(), st)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(vit(), path)
    path2 = tmp_path / "notensors.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path2)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_checkpoint(vit(), path2)


def test_build_model_infers_classes_and_patch_size_from_the_checkpoint(trained, tmp_path):
    path = tmp_path / "ck.pth"
    torch.save({"params": trained.state_dict()}, path)
    loaded = build_model("vit_small", checkpoint=path, image_size=32, **TINY)
    assert loaded.model.num_classes == 5 and loaded.model.patch_embed.patch_size == (8, 8)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), trained(x))


def test_checkpoint_at_another_resolution_gets_resampled_position_embeddings(trained, tmp_path):
    path = tmp_path / "ck.pth"
    torch.save(trained.state_dict(), path)
    model = vit(image_size=48)
    load_checkpoint(model, path)
    assert model.pos_embed.shape == (1, 1 + 36, 48)
    torch.testing.assert_close(model.cls_token, trained.cls_token)
