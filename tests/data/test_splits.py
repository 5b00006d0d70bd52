from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dermasynth.data.splits import SplitFractions, assign_splits


@st.composite
def lesion_tables(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Images of several classes; each lesion has 1-4 images of one class."""
    labels, lesions = [], []
    for c in range(draw(st.integers(1, 5))):
        for lesion in range(draw(st.integers(1, 60))):
            for _ in range(draw(st.integers(1, 4))):
                labels.append(f"c{c}")
                lesions.append(f"c{c}-l{lesion}")
    return labels, lesions


@settings(max_examples=60, deadline=None)
@given(lesion_tables(), st.integers(0, 2**31))
def test_no_lesion_in_two_splits_and_class_shares_hold(table: tuple[list[str], list[str]], seed: int) -> None:
    labels, lesions = table
    splits = assign_splits(labels, lesions, SplitFractions(), seed)
    where: dict[str, set[str]] = defaultdict(set)
    for lesion, split in zip(lesions, splits, strict=True):
        where[lesion].add(split)
    assert all(len(s) == 1 for s in where.values())

    for label in set(labels):
        rows = [s for lab, s in zip(labels, splits, strict=True) if lab == label]
        biggest_lesion = max(Counter(les for les, lab in zip(lesions, labels, strict=True) if lab == label).values())
        counts = Counter(rows)
        for split, target in SplitFractions().as_dict().items():
            # off its target by at most one lesion plus the one lesion each split is given first
            assert abs(counts[split] - target * len(rows)) <= 2 * biggest_lesion, (label, split, counts)


def test_every_split_gets_each_class_that_has_three_lesions() -> None:
    labels = ["df"] * 3 + ["nv"] * 50
    lesions = ["d1", "d2", "d3"] + [f"n{i}" for i in range(50)]
    splits = assign_splits(labels, lesions, seed=1)
    assert sorted(s for s, lab in zip(splits, labels, strict=True) if lab == "df") == ["test", "train", "val"]


def test_seed_fixes_the_split_and_changes_it() -> None:
    labels = ["a"] * 100
    lesions = [str(i) for i in range(100)]
    assert assign_splits(labels, lesions, seed=5) == assign_splits(labels, lesions, seed=5)
    assert assign_splits(labels, lesions, seed=5) != assign_splits(labels, lesions, seed=6)


def test_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match="add up to 1"):
        SplitFractions(train=0.5, val=0.1, test=0.1)


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        assign_splits(["a"], [])
