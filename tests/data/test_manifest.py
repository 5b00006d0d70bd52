from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dermasynth.data.manifest import Manifest, ManifestError, Record

SHA = "0" * 64


def record(image: str = "a.png", **changes: object) -> Record:
    base = Record(image=image, label="nv", lesion_id="L1", split="train", source="real", sha256=SHA)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    rows = [
        record("a.png", split_seed=3),
        record("b.png", lesion_id="L2", split="test", label="mel"),
        record("s.png", lesion_id="gen-1", source="synthetic", generator="gan@abc", seed=11, truncation=0.7),
    ]
    Manifest(rows, tmp_path).write(tmp_path)
    again = Manifest.read(tmp_path)
    assert again.records == rows
    assert again.root == tmp_path


@pytest.mark.parametrize("split", ["val", "test"])
def test_synthetic_images_are_refused_outside_train(split: str) -> None:
    with pytest.raises(ManifestError, match="synthetic images may only be in the train split"):
        record(source="synthetic", split=split)


def test_synthetic_outside_train_is_refused_when_read(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        f"image,label,lesion_id,split,source,sha256\nx.png,nv,L1,test,synthetic,{SHA}\n"
    )
    with pytest.raises(ManifestError, match="line 2"):
        Manifest.read(tmp_path)


def test_a_lesion_in_two_splits_is_refused() -> None:
    with pytest.raises(ManifestError, match="lesion L1 is in both"):
        Manifest([record("a.png"), record("b.png", split="val")])


def test_duplicate_images_are_refused() -> None:
    with pytest.raises(ManifestError, match="listed twice"):
        Manifest([record("a.png"), record("a.png")])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("split", "holdout", "split 'holdout'"),
        ("source", "fake", "source 'fake'"),
        ("label", "Not OK!", "class label"),
        ("sha256", "abc", "sha256"),
        ("lesion_id", "", "lesion_id is empty"),
    ],
)
def test_bad_fields_are_named(field: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        record(**{field: value})


def test_missing_columns_are_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("image,label\na.png,nv\n")
    with pytest.raises(ManifestError, match="lesion_id, sha256, source, split"):
        Manifest.read(tmp_path)


def test_views(tmp_path: Path) -> None:
    m = Manifest([record("a.png"), record("b.png", label="mel", lesion_id="L2", split="test")], tmp_path)
    assert m.classes == ["mel", "nv"]
    assert m.class_counts("test") == {"mel": 1}
    assert m.split_counts() == {"train": {"nv": 1}, "test": {"mel": 1}}
    assert m.path_of(m.records[0]) == tmp_path / "a.png"
