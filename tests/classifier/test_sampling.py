from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import RandomSampler

from dermasynth.classifier.sampling import (
    DistributedWeightedSampler,
    class_weights,
    sample_weights,
    weighted_sampler,
)

TARGETS = [0] * 900 + [1] * 90 + [2] * 10  # 90% / 9% / 1%
TOLERANCE = 0.02  # each class must be drawn 1/3 +- 2 points; plain shuffling draws 90/9/1


def _shares(indices: list[int]) -> np.ndarray:
    drawn = np.asarray(TARGETS)[indices]
    return np.bincount(drawn, minlength=3) / len(drawn)


def _balanced(indices: list[int]) -> bool:
    return bool(np.all(np.abs(_shares(indices) - 1 / 3) < TOLERANCE))


def test_weighted_sampler_draws_classes_in_balance() -> None:
    generator = torch.Generator().manual_seed(0)
    sampler = weighted_sampler(TARGETS, 3, generator=generator, num_samples=30_000)
    assert _balanced(list(sampler))
    # the same check fails for a sampler that ignores the weights
    assert not _balanced(list(RandomSampler(range(len(TARGETS)), num_samples=30_000, replacement=True)))


def test_weighted_sampler_replays_from_its_generator_state() -> None:
    generator = torch.Generator().manual_seed(5)
    sampler = weighted_sampler(TARGETS, 3, generator=generator)
    state = generator.get_state()
    first = list(sampler)
    generator.set_state(state)
    assert list(sampler) == first
    assert len(first) == len(TARGETS)


def test_distributed_sampler_keeps_the_weighting_across_ranks() -> None:
    weights = sample_weights(TARGETS, 3)
    ranks = [DistributedWeightedSampler(weights, num_replicas=2, rank=r, seed=3, num_samples=15_000) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(4)
    per_rank = [list(s) for s in ranks]
    assert all(len(part) == 15_000 for part in per_rank)
    assert all(_balanced(part) for part in per_rank)
    # the ranks hold interleaved halves of one draw: same epoch, same draw; another epoch, another draw
    again = DistributedWeightedSampler(weights, num_replicas=2, rank=0, seed=3, num_samples=15_000)
    again.set_epoch(4)
    assert list(again) == per_rank[0]
    again.set_epoch(5)
    assert list(again) != per_rank[0]
    assert per_rank[0] != per_rank[1]


def test_distributed_sampler_default_length_and_bad_arguments() -> None:
    weights = sample_weights(TARGETS, 3)
    assert len(DistributedWeightedSampler(weights, num_replicas=3, rank=2)) == 334
    with pytest.raises(ValueError, match=r"rank 2 is not in 0\.\.1"):
        DistributedWeightedSampler(weights, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="non-negative"):
        DistributedWeightedSampler(torch.tensor([-1.0, 2.0]), num_replicas=1, rank=0)


def test_class_weights_match_scikit_learn_balanced() -> None:
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.asarray(TARGETS))
    assert np.allclose(class_weights(TARGETS, 3).numpy(), expected)
    absent = class_weights([0, 0, 2], 3)
    assert absent[1] == 0 and absent[0] > 0
    with pytest.raises(ValueError, match=r"must lie in 0..2"):
        class_weights([0, 3], 3)
