"""Writes tests/reference_faithfulness.json: deletion, insertion and ROAD values for one small
fixed case, computed by outside implementations. Run ONCE in a throwaway venv outside the repo:

    python3 -m venv /tmp/faithvenv
    /tmp/faithvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 grad-cam quantus
    /tmp/faithvenv/bin/python tests/reference_faithfulness_make.py

Sources (versions are written into the JSON):
* deletion curve: Quantus ``PixelFlipping`` (quantus 0.6.0; perturb_baseline 0.0, softmax=True,
  the map broadcast over the 3 channels; it flips ``features_in_step`` channel values per step, so
  with features_in_step = pixels per step every 3rd point is a whole-pixel step, kept here). Its curve starts *after* the first step and its AUC
  is ``np.trapz(curve, dx=1)``; ours prepends the unperturbed point and uses dx = 1/steps.
* deletion and insertion: the RISE authors' ``CausalMetric.single_run`` and ``auc`` (github.com/
  eclique/RISE ``evaluation.py``, transcribed below: not on PyPI), substrates zeros (deletion)
  and their ``gkern(11, 5)`` blur (insertion).
* ROAD: pytorch-grad-cam 1.5.7 ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` with
  its ``NoisyLinearImputer(noise=0)`` (ROADMostRelevantFirst hard-codes noise 0.01, random),
  scored by ``ClassifierOutputSoftmaxTarget`` without the diff (``return_diff=False``).
Nothing here imports the auditor.
"""
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

SIDE, STEPS = 16, 8


def build_model():
    """The fixed case's model: weights from a NumPy generator (independent of torch's RNG)."""
    rng = np.random.default_rng(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.as_tensor(rng.normal(0, 0.3, tuple(p.shape)), dtype=torch.float32))
    return m.eval()


def fixed_case():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.uniform(0, 1, (1, 3, SIDE, SIDE)), dtype=torch.float32)
    saliency = rng.uniform(0, 1, (1, SIDE, SIDE))  # distinct values: no ties
    return x, saliency


def rise_gkern(klen=11, nsig=5):
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    kern[0, 0] = k
    kern[1, 1] = k
    kern[2, 2] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def rise_single_run(model, img_tensor, explanation, mode, step, substrate_fn, c):
    HW = SIDE * SIDE
    n_steps = (HW + step - 1) // step
    if mode == "del":
        start, finish = img_tensor.clone(), substrate_fn(img_tensor)
    else:
        start, finish = substrate_fn(img_tensor), img_tensor.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, HW), axis=1), axis=-1)
    for i in range(n_steps + 1):
        pred = torch.softmax(model(start), 1)
        scores[i] = pred[0, c]
        if i < n_steps:
            coords = salient_order[:, step * i:step * (i + 1)]
            start.numpy().reshape(1, 3, HW)[0, :, coords] = finish.numpy().reshape(1, 3, HW)[0, :, coords]
    return scores


def main():
    import quantus
    from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric,
                                                                  RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = build_model()
    x, sal = fixed_case()
    with torch.no_grad():
        c = int(model(x).argmax())
        p0 = float(torch.softmax(model(x), 1)[0, c])
    step = SIDE * SIDE // STEPS
    q = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.0, normalise=False, abs=False,
                              disable_warnings=True)
    a = sal[:, None].astype(np.float32)  # [1, 1, H, W]: Quantus broadcasts it over the channels
    q_curve = q(model=model, x_batch=x.numpy(), y_batch=np.array([c]), a_batch=a, softmax=True, device="cpu",
                channel_first=True)[0]
    with torch.no_grad():
        blur = lambda t: nn.functional.conv2d(t, rise_gkern(), padding=11 // 2)  # noqa: E731
        del_curve = rise_single_run(model, x, sal, "del", step, torch.zeros_like, c)
        ins_curve = rise_single_run(model, x, sal, "ins", step, blur, c)
    road = {}
    for order, cls in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        vals = []
        for k in range(1, STEPS):
            pct = 100 * (1 - k / STEPS)
            metric = PerturbationConfidenceMetric(cls(pct, NoisyLinearImputer(noise=0.0)))
            out, pert = metric(x, sal.astype(np.float32), [ClassifierOutputSoftmaxTarget(c)], model,
                               return_visualization=True, return_diff=False)
            vals.append({"fraction": k / STEPS, "percentile": pct, "probability": float(out[0]),
                         "imputed_sum": float(pert.double().sum()), "removed": int((pert != x).any(1).sum())})
        road[order] = vals
    ref = {
        "case": {"side": SIDE, "steps": STEPS, "target": c, "p_unperturbed": p0},
        "versions": {"python": sys.version.split()[0], "torch": version("torch"), "quantus": version("quantus"),
                     "grad-cam": version("grad-cam"), "numpy": version("numpy"), "scipy": version("scipy")},
        "quantus_pixel_flipping": {"curve": [float(v) for v in q_curve][2::3],
                                   "source": "quantus.PixelFlipping; it flips channel values (features_in_step of the "
                                             "3 x H x W values per step), so every 3rd point is a whole-pixel step"},
        "rise": {"deletion_zero": del_curve.tolist(), "deletion_zero_auc": float(rise_auc(del_curve)),
                 "insertion_blur": ins_curve.tolist(), "insertion_blur_auc": float(rise_auc(ins_curve)),
                 "source": "github.com/eclique/RISE evaluation.py CausalMetric.single_run + auc (transcribed)"},
        "road_pytorch_grad_cam": road,
    }
    Path(__file__).with_name("reference_faithfulness.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(json.dumps(ref, indent=1))


if __name__ == "__main__":
    main()
