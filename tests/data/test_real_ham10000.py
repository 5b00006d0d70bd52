"""The real HAM10000 (200x150 copy beside the repository); skipped where it is absent."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from dermasynth.data.importer import import_dataset
from dermasynth.labels import HAM10000_COUNTS
from tests.conftest import REAL_HAM10000

pytestmark = pytest.mark.real_data


def test_real_ham10000_imports_completely_with_lesion_grouped_splits(tmp_path: Path) -> None:
    manifest, report = import_dataset(REAL_HAM10000, tmp_path / "ham", seed=0, copy=False)
    assert report.files_seen == report.accepted == 10_015
    assert manifest.class_counts() == HAM10000_COUNTS
    assert len({r.lesion_id for r in manifest}) == 7_470
    splits_of = defaultdict(set)
    for r in manifest:
        splits_of[r.lesion_id].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert sorted(map(sorted, report.duplicates)) == [
        ["images/ISIC_0024366.jpg", "images/ISIC_0029861.jpg"],
        ["images/ISIC_0024777.jpg", "images/ISIC_0029938.jpg"],
    ]
    for label, count in HAM10000_COUNTS.items():  # every class in every split, near 70/15/15
        per_split = {s: manifest.split_counts()[s][label] for s in ("train", "val", "test")}
        assert abs(per_split["test"] / count - 0.15) < 0.03, (label, per_split)
