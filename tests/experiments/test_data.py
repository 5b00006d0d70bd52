from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dermasynth.data.manifest import Manifest
from dermasynth.experiments.data import DataSource, DemoData, prepare_dataset


def test_a_demo_dataset_is_made_once(tmp_path: Path) -> None:
    source = DataSource(demo=DemoData(count=56, size=16, seed=2))
    first = prepare_dataset(source, tmp_path / "data")
    assert len(first) == 56 and {r.source for r in first} == {"generated"}
    assert prepare_dataset(source, tmp_path / "data").records == first.records
    with pytest.raises(FileExistsError, match="another source"):
        prepare_dataset(DataSource(demo=DemoData(count=56, size=16, seed=3)), tmp_path / "data")


def test_an_import_references_the_source_images(demo_dataset: Manifest, tmp_path: Path) -> None:
    source = DataSource(import_from=demo_dataset.root, format="manifest")
    imported = prepare_dataset(source, tmp_path / "data")
    assert len(imported) == len(demo_dataset)
    assert all(Path(r.image).is_absolute() for r in imported)  # nothing copied
    assert not (tmp_path / "data" / "images").exists()
    assert prepare_dataset(DataSource(dataset=demo_dataset.root), tmp_path / "unused").records == demo_dataset.records


def test_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one of dataset, import_from or demo"):
        DataSource()
    with pytest.raises(ValidationError, match="exactly one"):
        DataSource(dataset=Path("a"), demo=DemoData())
    assert DataSource(dataset=Path("a")).relative_to(Path("/cfg")).dataset == Path("/cfg/a")
    assert DataSource(dataset=Path("/abs")).relative_to(Path("/cfg")).dataset == Path("/abs")
