"""Retraining a bundled checkpoint with its recipe reproduces its accuracy (slow: run by hand).

    python -m pytest -m slow tests/test_retrain.py     # ~10-20 minutes per recipe on 2 cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clean", "shortcut"])
def test_recipe_reproduces_the_shipped_accuracy(name, tmp_path):
    sys.path.insert(0, str(MODELS))
    from train import train

    card = json.loads((MODELS / f"demo_{name}" / "card.json").read_text())
    n_train = int(card["train_data"].split(", ")[1].split()[0])
    new = train(name, n_train=n_train, steps=card["steps"], lr=card["lr"], threads=card.get("threads", 1),
                out=tmp_path)
    assert abs(new["heldout_accuracy"] - card["heldout_accuracy"]) <= 0.02
