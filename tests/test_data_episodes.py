"""Few-shot episodes: counts, class membership, determinism, too-small classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.data import Dataset, Record, sample_episodes
from auditor.errors import DataError


def dataset(sizes: dict[str, int]) -> Dataset:
    classes = sorted(sizes)
    records = [Record(id=f"{c}/{i}", image=Path(f"/d/{c}/{i}.png"), label=k, label_name=c)
               for k, c in enumerate(classes) for i in range(sizes[c])]
    records.append(Record(id="unlabelled", image=Path("/d/u.png")))  # ignored by the sampler
    return Dataset(records, [], classes, Path("/d"), Path("/d"))


def ids(episodes):
    return [([r.id for r in e.support], [r.id for r in e.query], e.classes) for e in episodes]


def test_episode_counts_and_membership():
    ds = dataset({"a": 5, "b": 5, "c": 4})
    eps = sample_episodes(ds, n_way=2, k_shot=2, n_query=2, episodes=6, seed=1)
    assert len(eps) == 6
    for e in eps:
        assert len(e.support) == 4 and len(e.query) == 4
        assert len(set(e.classes)) == 2 and set(e.classes) <= {0, 1, 2}
        # class by class, in the order of e.classes: support[0:2] of classes[0], support[2:4] of classes[1]
        assert [r.label for r in e.support] == [e.classes[0]] * 2 + [e.classes[1]] * 2
        assert [r.label for r in e.query] == [e.classes[0]] * 2 + [e.classes[1]] * 2
        assert {r.split for r in e.support} == {"support"} and {r.split for r in e.query} == {"query"}
        assert not {r.id for r in e.support} & {r.id for r in e.query}
    assert len({tuple(e.classes) for e in eps}) > 1  # the classes vary between episodes


def test_episodes_are_deterministic_for_a_seed():
    ds = dataset({"a": 6, "b": 6, "c": 6})
    first = ids(sample_episodes(ds, n_way=3, k_shot=1, n_query=3, episodes=4, seed=7))
    assert first == ids(sample_episodes(ds, n_way=3, k_shot=1, n_query=3, episodes=4, seed=7))
    assert first != ids(sample_episodes(ds, n_way=3, k_shot=1, n_query=3, episodes=4, seed=8))


def test_too_few_images_or_classes():
    ds = dataset({"a": 5, "b": 5, "c": 4})
    with pytest.raises(DataError, match=r"need 5 images per class: class 2 \('c'\) has 4"):
        sample_episodes(ds, n_way=2, k_shot=3, n_query=2, episodes=1, seed=0)
    with pytest.raises(DataError, match="4-way episodes need 4 classes; .* has 3"):
        sample_episodes(ds, n_way=4, k_shot=1, n_query=1, episodes=1, seed=0)
    with pytest.raises(DataError, match="k_shot must be a positive integer"):
        sample_episodes(ds, n_way=2, k_shot=0, n_query=1, episodes=1, seed=0)
