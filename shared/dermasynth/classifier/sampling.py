"""Class balance: inverse-frequency weights, the weighted sampler, and its distributed counterpart.

Weights come from the training rows actually used, synthetic ones included, so adding GAN images of a
rare class lowers how often each of them is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler, WeightedRandomSampler


def class_counts(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """Images per class index, shape ``(num_classes,)``.

    Raises:
        ValueError: if a target lies outside ``0..num_classes-1``.
    """
    t = torch.as_tensor(list(targets), dtype=torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"targets must lie in 0..{num_classes - 1}, got {int(t.min())}..{int(t.max())}")
    return torch.bincount(t, minlength=num_classes)


def class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """Loss weights ``n / (k * n_c)`` (scikit-learn's "balanced"); 0 for a class absent from training."""
    counts = class_counts(targets, num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


def sample_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """One weight per sample, ``1 / n_c``: every class is drawn equally often in expectation."""
    counts = class_counts(targets, num_classes).double()
    t = torch.as_tensor(list(targets), dtype=torch.long)
    return (1.0 / counts[t]).double()


def weighted_sampler(
    targets: Sequence[int], num_classes: int, generator: torch.Generator | None = None, num_samples: int | None = None
) -> WeightedRandomSampler:
    """torch's ``WeightedRandomSampler`` drawing ``num_samples`` (default: one epoch's worth) with replacement."""
    weights = sample_weights(targets, num_classes)
    return WeightedRandomSampler(weights.tolist(), num_samples or len(weights), replacement=True, generator=generator)


class DistributedWeightedSampler(Sampler[int]):
    """Class-weighted draws split across DDP ranks.

    Every rank draws the same ``num_replicas * num_samples`` indices from one generator seeded with
    ``seed + epoch`` (call :meth:`set_epoch` each epoch, as with ``DistributedSampler``) and keeps every
    ``num_replicas``-th from its rank on, so the ranks see disjoint parts of one weighted draw.

    Args:
        weights: one non-negative weight per sample (e.g. :func:`sample_weights`).
        num_replicas: the world size.
        rank: this process's rank.
        seed: shared by all ranks.
        num_samples: indices per rank and epoch; default ``ceil(len(weights) / num_replicas)``.
    """

    def __init__(
        self, weights: torch.Tensor, num_replicas: int, rank: int, seed: int = 0, num_samples: int | None = None
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1} (num_replicas={num_replicas})")
        if weights.ndim != 1 or weights.numel() == 0 or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be a non-empty 1-D tensor of non-negative numbers with a positive sum")
        self.weights = weights.double()
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.num_samples = num_samples or math.ceil(len(weights) / num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(
            self.weights, self.num_samples * self.num_replicas, replacement=True, generator=generator
        )
        return iter(drawn[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
