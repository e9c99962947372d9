"""Generate the FewTURE classifier reference that tests/test_few_shot.py checks.

NOT run by the tests (no ``test_`` prefix). The reference is the users' FewTURE fork:

    repository  github.com/dinhmanhhai/FewTURE-HaiDM
    commit      3e1c78e1856df172b3c26bf6871152a00c3314cb
    files       eval_FewTURE.py (get_patch_embeddings, compute_emb_cosine_similarity, PatchFSL:
                the classifier, run verbatim), models/vision_transformer.py (the backbone)

Neither file is part of this repository. To regenerate, put the two files in a folder outside
the repository with the stubs of tests/data/make_fewture_reference.py (``utils.py``, a ``timm``
package), then, from the repository root::

    python3 -m venv /tmp/fewvenv
    /tmp/fewvenv/bin/pip install torch==2.14.1 numpy safetensors
    /tmp/fewvenv/bin/python tests/data/make_fewture_fewshot_reference.py /tmp/fewref

``PatchFSL``, ``get_patch_embeddings`` and ``compute_emb_cosine_similarity`` are taken from
eval_FewTURE.py by ``ast`` and executed unchanged with the module-level ``args`` the fork's
``__main__`` sets; the one intervention is a ``TorchFunctionMode`` that turns the fork's
hard-coded ``.cuda()`` / ``device='cuda'`` into the CPU. The backbone is the fork's
``VisionTransformer`` with the weights of ``tests/data/fewture_all_flags.safetensors`` (built by the
fork's code, see make_fewture_reference.py: MAB + DRFF, width 48, depth 2, 112 px, 7 x 7 tokens),
loaded as eval_FewTURE.py l. 368 does. Each episode is run as the fork's evaluation loop
(l. 412-424): one batch of ``n_way * (k_shot + query)`` images, class by class, each class's
``k_shot`` support images first; ``PatchFSL(args, N, N)(emb_support, emb_support, emb_query,
label_support)`` gives the query logits.

Writes ``tests/data/fewture_fewshot_reference.npz``:

- ``pool``: ``[20, 28, 28, 3]`` uint8 levels of 4 classes x 5 synthetic images (class colour
  + noise); an image's input is ``x = (u - 128) / 64`` of the levels repeated 4 x 4 (112 px).
- ``pool_label``: ``[20]`` class of each pool image.
- per setting ``<name>`` (``k2_default``: 3-way 2-shot 2 queries, the fork's default temperature;
  ``k1_temp``: 3-way 1-shot 2 queries, ``temp_sim`` 0.08 as if read from the checkpoint):
  ``<name>/episodes`` ``[E, n_way, k_shot + query]`` pool indices (class order = row order;
  support first), ``<name>/temperature``, and for ``peiv`` in ``off`` / ``on``
  ``<name>/<peiv>/logits`` ``[E, n_way * query, n_way]`` and ``<name>/<peiv>/prediction``;
  ``<name>/synthetic_support`` ``[E, n_way * k_shot, 16, 8]`` and ``<name>/synthetic_query``
  ``[E, n_way * query, 16, 8]``: seeded normal tokens stored as float16 (the fork gets their
  exact float32 values) and ``<name>/<peiv>/synthetic_logits``: the classifier alone, on the
  same tokens for both sides (PEIV amplifies float32 rounding of the backbone's tokens, so the
  backbone's ``logits`` with PEIV agree only to about 1e-2; see tests/test_few_shot.py).
- ``versions/*``: torch, numpy, the fork's commit.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

OUT = Path(__file__).resolve().parent
COMMIT = "3e1c78e1856df172b3c26bf6871152a00c3314cb"
KWARGS = {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 16, "use_mab": True, "use_ocab": True,
          "use_drff": True, "window_size": 7}
SETTINGS = {"k2_default": (3, 2, 2, 0.051031036307982884), "k1_temp": (3, 1, 2, 0.08)}
EPISODES = 20


class OnCPU(TorchFunctionMode):
    """The fork's ``.cuda()`` and ``device='cuda'`` on the CPU; nothing else changes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def fork_classifier(ref_dir: Path) -> dict:
    """eval_FewTURE.py's classifier code, verbatim, in a namespace of its own."""
    tree = ast.parse((ref_dir / "eval_FewTURE.py").read_text())
    wanted = {"get_patch_embeddings", "compute_emb_cosine_similarity", "PatchFSL"}
    nodes = [n for n in tree.body if getattr(n, "name", None) in wanted]
    assert {n.name for n in nodes} == wanted
    ns = {"torch": torch, "nn": torch.nn, "np": np}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "eval_FewTURE.py", "exec"), ns)
    return ns


def make_pool(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    images, labels = [], []
    for c, colour in enumerate(colours):
        for _ in range(5):
            noise = rng.normal(0, 50, (28, 28, 3))
            blob = np.zeros((28, 28, 1))
            y, x = rng.integers(0, 16, 2)
            blob[y:y + 10, x:x + 10] = 0.5
            images.append(np.clip(128 + noise + blob * (colour - 128), 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels)


def inputs(pool: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    u = torch.from_numpy(pool[idx.ravel()]).permute(0, 3, 1, 2).float()
    return (u.repeat_interleave(4, 2).repeat_interleave(4, 3) - 128) / 64


def main(ref_dir: str) -> None:
    ref_dir = Path(ref_dir)
    sys.path.insert(0, str(ref_dir))
    import vision_transformer as ref  # the fork's file, outside this repository

    fork = fork_classifier(ref_dir)
    model = ref.VisionTransformer(img_size=[112], mlp_ratio=4, qkv_bias=True, return_all_tokens=True, **KWARGS)
    stored = load_file(str(OUT / "fewture_all_flags.safetensors"))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    print(model.load_state_dict(sd, strict=False))
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    rng = np.random.default_rng(0)
    pool, pool_label = make_pool(rng)
    arrays: dict[str, np.ndarray] = {"pool": pool, "pool_label": pool_label}
    for name, (n_way, k_shot, query, temp) in SETTINGS.items():
        eps = np.stack([np.stack([rng.choice(np.flatnonzero(pool_label == c), k_shot + query, replace=False)
                                  for c in rng.choice(4, n_way, replace=False)]) for _ in range(EPISODES)])
        arrays[f"{name}/episodes"], arrays[f"{name}/temperature"] = eps, np.float64(temp)
        syn_s = rng.standard_normal((EPISODES, n_way * k_shot, 16, 8)).astype(np.float16)
        syn_q = rng.standard_normal((EPISODES, n_way * query, 16, 8)).astype(np.float16)
        arrays[f"{name}/synthetic_support"], arrays[f"{name}/synthetic_query"] = syn_s, syn_q
        for peiv in ("off", "on"):
            args = argparse.Namespace(n_way=n_way, k_shot=k_shot, query=query, similarity_temp=temp,
                                      disable_peiv_optimisation=peiv == "off", optimiser_online="SGD", lr_online=0.1,
                                      optim_steps_online=15, block_mask_1shot=5)
            fork["args"] = args  # _predict reads the module-level args of the fork's __main__
            label_support = torch.arange(n_way).repeat_interleave(k_shot)

            def classify(emb_support: torch.Tensor, emb_query: torch.Tensor) -> torch.Tensor:
                with torch.enable_grad():
                    fsl = fork["PatchFSL"](args, emb_support.shape[1], emb_support.shape[1])
                    return fsl(emb_support, emb_support, emb_query, label_support).detach()

            logits, synthetic = [], []
            with OnCPU(), torch.no_grad():
                for e, ep in enumerate(eps):
                    logits.append(classify(*fork["get_patch_embeddings"](model, inputs(pool, ep), args)))
                    synthetic.append(classify(torch.from_numpy(syn_s[e]).float(), torch.from_numpy(syn_q[e]).float()))
            z = torch.stack(logits).numpy()
            arrays[f"{name}/{peiv}/logits"], arrays[f"{name}/{peiv}/prediction"] = z, z.argmax(-1)
            arrays[f"{name}/{peiv}/synthetic_logits"] = torch.stack(synthetic).numpy()
            truth = np.repeat(np.arange(n_way), query)
            print(name, peiv, z.shape, "accuracy", float((z.argmax(-1) == truth).mean()))
    arrays["versions/torch"] = np.array(torch.__version__)
    arrays["versions/numpy"] = np.array(np.__version__)
    arrays["versions/fork"] = np.array(f"github.com/dinhmanhhai/FewTURE-HaiDM@{COMMIT}")
    np.savez_compressed(OUT / "fewture_fewshot_reference.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fewref")
