"""Make tests/data/reference_preprocess.{json,npz}: timm's and Hugging Face's own evaluation
transforms of a few skimage.data images, for tests/test_preprocess_reference.py.

Run in a throwaway venv OUTSIDE the project (timm needs torchvision, which does not import
beside the project's torch 2.13.0), e.g. ``/work/refvenv/bin/python tests/reference_preprocess_make.py``
with torch 2.14.1, torchvision 0.29.1, timm 1.0.31, transformers 5.24.0, pillow, scikit-image.

Each library output ``x`` ``[3, h, w]`` (float32, normalised) is stored as the ``uint8`` image it
came from, ``u = round((x * std + mean) * 255)``, after checking that ``(u / 255 - mean) / std``
gives ``x`` back to 1e-6: the same values, a tenth of the bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import PIL
import skimage
import timm
import torch
import torchvision
import transformers
from PIL import Image
from skimage import data
from timm.data import create_transform, resolve_data_config
from transformers.models.bit.image_processing_bit import BitImageProcessor
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
from transformers.models.vit.image_processing_vit import ViTImageProcessor

HERE = Path(__file__).parent / "data"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def images() -> dict[str, np.ndarray]:
    return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
            "astronaut_odd": data.astronaut()[7:300, 11:420]}  # 293 x 409: odd margins


TIMM = {  # case -> (timm model, input size given as resolve_data_config's args)
    "timm_vit_center": ("vit_small_patch16_224.augreg_in21k_ft_in1k", (48, 48)),
    "timm_resnet_bilinear_nonsquare": ("resnet18.tv_in1k", (40, 56)),
    "timm_convnext_squash": ("convnext_tiny.fb_in22k_ft_in1k_384", (48, 48)),
}
HF = {  # case -> (processor class, kwargs); dinov2's processor is a BitImageProcessor (shortest edge + crop)
    "hf_bit_pil": (BitImageProcessorPil, dict(size={"shortest_edge": 55}, crop_size={"height": 48, "width": 48},
                                              do_center_crop=True, resample=3, image_mean=IMAGENET[0],
                                              image_std=IMAGENET[1])),
    "hf_vit_pil": (ViTImageProcessorPil, dict(size={"height": 40, "width": 56}, resample=2,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3)),
    "hf_bit_torchvision": (BitImageProcessor, dict(size={"shortest_edge": 55}, crop_size={"height": 48, "width": 48},
                                                   do_center_crop=True, resample=3, image_mean=IMAGENET[0],
                                                   image_std=IMAGENET[1])),
    "hf_vit_torchvision": (ViTImageProcessor, dict(size={"height": 40, "width": 56}, resample=2,
                                                   image_mean=[0.5] * 3, image_std=[0.5] * 3)),
}
PROCESSOR_KEYS = ("do_resize", "size", "do_center_crop", "crop_size", "resample", "do_rescale", "rescale_factor",
                  "do_normalize", "image_mean", "image_std")


def to_uint8(x: np.ndarray, mean, std) -> np.ndarray:
    m, s = np.asarray(mean, np.float64)[:, None, None], np.asarray(std, np.float64)[:, None, None]
    u = np.round((x.astype(np.float64) * s + m) * 255)
    assert u.min() >= 0 and u.max() <= 255
    back = (u / 255 - m) / s
    assert np.abs(back - x).max() < 1e-6, np.abs(back - x).max()
    return u.astype(np.uint8)


def main() -> None:
    imgs = images()
    arrays, cases = {}, {}
    for case, (name, size) in TIMM.items():
        model = timm.create_model(name, pretrained=False)
        cfg = resolve_data_config({"input_size": (3, *size)}, model=model)
        tf = create_transform(**cfg)
        pcfg = {k: model.pretrained_cfg.get(k) for k in ("input_size", "crop_pct", "crop_mode", "interpolation",
                                                          "mean", "std")}
        cases[case] = {"library": "timm", "model": name, "pretrained_cfg": pcfg, "image_size": list(size),
                       "transform": repr(tf)}
        for iname, img in imgs.items():
            x = tf(Image.fromarray(img)).numpy()
            arrays[f"{case}/{iname}"] = to_uint8(x, cfg["mean"], cfg["std"])
    for case, (cls, kwargs) in HF.items():
        proc = cls(**kwargs)
        d = proc.to_dict()
        cases[case] = {"library": "transformers", "processor": cls.__name__,
                       "preprocessor_config": {k: d[k] for k in PROCESSOR_KEYS if k in d}}
        for iname, img in imgs.items():
            x = np.asarray(proc(images=img, return_tensors="pt")["pixel_values"][0].numpy())
            arrays[f"{case}/{iname}"] = to_uint8(x, d["image_mean"], d["image_std"])
    # measured: the torchvision backends (transformers 5.x's default classes) against the PIL ones
    for tv, pil in (("hf_bit_torchvision", "hf_bit_pil"), ("hf_vit_torchvision", "hf_vit_pil")):
        diff = [int(np.abs(arrays[f"{tv}/{i}"].astype(int) - arrays[f"{pil}/{i}"]).max()) for i in imgs]
        share = [float((arrays[f"{tv}/{i}"] != arrays[f"{pil}/{i}"]).mean()) for i in imgs]
        cases[tv]["vs_pil_max_levels"] = max(diff)
        cases[tv]["vs_pil_share_differing"] = round(max(share), 4)
    meta = {"made_by": "tests/reference_preprocess_make.py",
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "timm": timm.__version__,
                         "transformers": transformers.__version__, "pillow": PIL.__version__,
                         "scikit-image": skimage.__version__},
            "images": {k: list(v.shape) for k, v in imgs.items()},
            "encoding": "uint8 u with x = (u / 255 - mean) / std (checked to 1e-6 when made)", "cases": cases}
    np.savez_compressed(HERE / "reference_preprocess.npz", **arrays)
    (HERE / "reference_preprocess.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: {kk: v.get(kk) for kk in ("vs_pil_max_levels", "vs_pil_share_differing")}
                      for k, v in cases.items()}, indent=1))


if __name__ == "__main__":
    main()
