"""Lesion-grouped, class-stratified, seeded train/val/test splits.

scikit-learn's ``StratifiedGroupKFold`` only cuts 1/k folds; DermaSynth needs arbitrary fractions
(70/15/15 by default), so the assignment is done here: within each class, lesions are shuffled with
the seed and each one, largest first, goes to a split that has none of the class yet, else to the
split furthest below its target share of that class's images. No lesion is ever divided, and every
split receives a lesion of a class as soon as the class has at least as many lesions as splits.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, Field, model_validator

from dermasynth.data.manifest import SPLITS


class SplitFractions(BaseModel):
    """Target share of images per split."""

    train: float = Field(default=0.70, gt=0, lt=1)
    val: float = Field(default=0.15, ge=0, lt=1)
    test: float = Field(default=0.15, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, got {total:.4f}")
        return self

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SPLITS}


def assign_splits(
    labels: Sequence[str],
    lesion_ids: Sequence[str],
    fractions: SplitFractions | None = None,
    seed: int = 0,
) -> list[str]:
    """Assign each image a split so that no lesion spans two splits and class shares hold.

    Args:
        labels: the class label of each image.
        lesion_ids: the lesion of each image (same length as ``labels``).
        fractions: target share of images per split.
        seed: seeds the shuffle; the same inputs and seed give the same splits.

    Returns:
        The split name of each image, in input order.

    Raises:
        ValueError: if the two sequences differ in length.
    """
    if len(labels) != len(lesion_ids):
        raise ValueError(f"labels ({len(labels)}) and lesion_ids ({len(lesion_ids)}) differ in length")
    targets = (fractions or SplitFractions()).as_dict()
    active = [s for s in SPLITS if targets[s] > 0]

    members: dict[str, list[int]] = defaultdict(list)
    for index, lesion in enumerate(lesion_ids):
        members[lesion].append(index)
    # A lesion's class is its most frequent label (ties broken by name) so mixed lesions stay whole.
    lesions_of_class: dict[str, list[str]] = defaultdict(list)
    for lesion in sorted(members):
        counts = Counter(labels[i] for i in members[lesion])
        top = max(sorted(counts), key=lambda label: counts[label])
        lesions_of_class[top].append(lesion)

    rng = random.Random(seed)
    split_of_lesion: dict[str, str] = {}
    for label in sorted(lesions_of_class):
        lesions = lesions_of_class[label]
        rng.shuffle(lesions)
        lesions.sort(key=lambda lesion: len(members[lesion]), reverse=True)  # stable: shuffled ties
        total = sum(len(members[lesion]) for lesion in lesions)
        filled = dict.fromkeys(active, 0)
        for lesion in lesions:
            # A split still without this class comes first; then the one furthest below its target.
            split = max(active, key=lambda s: (filled[s] == 0, targets[s] * total - filled[s]))
            split_of_lesion[lesion] = split
            filled[split] += len(members[lesion])
    return [split_of_lesion[lesion] for lesion in lesion_ids]
