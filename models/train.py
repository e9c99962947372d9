"""Training recipe for the bundled demo checkpoints (CPU, minutes).

    python models/train.py clean      # -> models/demo_clean/    plain ViT on the synthetic shapes
    python models/train.py shortcut   # -> models/demo_shortcut/ same ViT, corner-mark shortcut data

Each run writes ``model.safetensors``, ``config.json`` (architecture, preprocessing,
classes) and ``card.json`` (data, steps, seconds, held-out accuracy), deterministically
for a seed (single-threaded CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from auditor.datasets.synthetic import CLASSES, SyntheticConfig, tensors  # noqa: E402
from auditor.models import create_model  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ARCH = {"arch": "vit_tiny", "kwargs": {"image_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4,
                                       "num_heads": 3, "num_classes": len(CLASSES)}}
# "clean" sees random corner marks in training, so it learns to ignore them; "shortcut" sees
# marks that carry the label on objects of random shape, so the mark is all it can use.
# Both are evaluated on clean held-out data and on the demo's data (marks = true class).
RECIPES = {
    "clean": {"train": SyntheticConfig(shortcut="shuffled"), "eval": SyntheticConfig(), "steps": 9000},
    "shortcut": {"train": SyntheticConfig(shortcut="train"), "eval": SyntheticConfig(shortcut="consistent"), "steps": 1500},
}
DEMO_DATA = SyntheticConfig(shortcut="consistent")
TRAIN_SEED, EVAL_SEED = 1, 2


def to_input(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def accuracy(model, images, labels) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_input(images[i:i + 256])).argmax(1) for i in range(0, len(images), 256)])
    return float((pred.numpy() == labels).mean())


def train(name: str, *, n_train: int, steps: int, batch: int = 64, lr: float = 1e-3, seed: int = 0,
          threads: int = 2, out: Path | None = None) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    recipe = RECIPES[name]
    t0 = time.time()
    images, labels, _ = tensors(TRAIN_SEED, range(n_train), recipe["train"])
    ev_images, ev_labels, _ = tensors(EVAL_SEED, range(500), recipe["eval"])
    t_data = time.time() - t0
    model = create_model(ARCH["arch"], **ARCH["kwargs"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(labels)
    for step in range(steps):
        model.train()
        idx = torch.randint(0, n_train, (batch,), generator=g)
        x = to_input(images[idx.numpy()])
        if name == "clean":  # horizontal flips keep every shape's class
            flip = torch.rand(batch, generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
        loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"{name} step {step} loss {loss.item():.3f}", flush=True)
    acc = accuracy(model, ev_images, ev_labels)
    demo_images, demo_labels, _ = tensors(EVAL_SEED, range(500), DEMO_DATA)
    demo_acc = accuracy(model, demo_images, demo_labels)
    out = Path(out) if out else ROOT / f"demo_{name}"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    config = {**ARCH, "mean": MEAN, "std": STD, "classes": list(CLASSES)}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    card = {"name": f"demo:{name}", "train_data": f"synthetic seed {TRAIN_SEED}, {n_train} images, {recipe['train']}",
            "eval_data": f"synthetic seed {EVAL_SEED}, 500 images, {recipe['eval']}", "steps": steps, "batch": batch,
            "lr": lr, "threads": threads, "heldout_accuracy": acc, "demo_data_accuracy": demo_acc, "seconds": round(time.time() - t0, 1), "data_seconds": round(t_data, 1),
            "torch": torch.__version__}
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))
    return card


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--n-train", type=int, default=30000)
    ap.add_argument("--steps", type=int, default=None, help="[default: the recipe's, as shipped: clean 9000, shortcut 1500]")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1: two recipes side by side)")
    ap.add_argument("--out", type=Path, default=None, help="output folder [default: models/demo_<name>]")
    args = ap.parse_args()
    train(args.name, n_train=args.n_train, steps=args.steps or RECIPES[args.name]["steps"], lr=args.lr, threads=args.threads, out=args.out)
