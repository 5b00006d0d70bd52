"""Publishing datasets to the store and fetching them back, on the filesystem store and on S3 over HTTP."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dermasynth.data.catalog import CATALOG_PREFIX, DatasetCatalog, DatasetNotFound, check_dataset_id
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.storage import FilesystemStore, ObjectStore, S3Store


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "filesystem":
        yield FilesystemStore(tmp_path / "store")
    else:
        yield S3Store(request.getfixturevalue("s3_endpoint"), "test", "test-secret", f"r-{uuid.uuid4().hex[:12]}")


def test_publish_list_get_fetch(store: ObjectStore, demo_dataset: Manifest, tmp_path: Path) -> None:
    registry = DatasetCatalog(store, tmp_path / "cache")
    info = registry.publish(demo_dataset.root, name="demo", origin="local")
    assert info.stats.images == len(demo_dataset) and info.stats.classes == demo_dataset.class_counts()
    assert store.exists(f"{CATALOG_PREFIX}/{info.id}.json")
    assert store.exists(f"datasets/{info.id}/manifest.csv")
    assert [d.id for d in registry.list()] == [info.id] and registry.get(info.id) == info
    fetched = registry.fetch(info.id)
    assert fetched.root == tmp_path / "cache" / "datasets" / info.id
    assert [(r.image, r.label, r.split, r.sha256) for r in fetched] == [
        (r.image, r.label, r.split, r.sha256) for r in demo_dataset
    ]
    assert all(fetched.path_of(r).is_file() for r in fetched)
    store.delete(f"datasets/{info.id}/manifest.csv")  # the cached copy is complete: no second download
    assert len(registry.fetch(info.id)) == len(demo_dataset)


def test_publish_with_a_fixed_id_is_idempotent(store: ObjectStore, demo_dataset: Manifest, tmp_path: Path) -> None:
    registry = DatasetCatalog(store, tmp_path / "cache")
    first = registry.publish(demo_dataset.root, name="syn", origin="synthesis", dataset_id="syn-job1", job_id="job1")
    again = registry.publish(demo_dataset.root, name="other name", origin="synthesis", dataset_id="syn-job1")
    assert again == first and again.job_id == "job1"


def test_a_failed_publish_leaves_nothing(store: ObjectStore, demo_dataset: Manifest, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_dataset.root, broken)
    victim = sorted((broken / "images").iterdir())[-1]
    victim.unlink()  # the manifest names a file that is gone: the upload fails part-way
    registry = DatasetCatalog(store, tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        registry.publish(broken, name="broken", origin="local", dataset_id="ds-broken")
    assert store.list("datasets/") == [] and store.list("catalog/") == []
    with pytest.raises(DatasetNotFound):
        registry.get("ds-broken")


def test_unsafe_image_names_get_safe_keys(store: ObjectStore, tmp_path: Path, demo_dataset: Manifest) -> None:
    folder = tmp_path / "odd"
    (folder / "images").mkdir(parents=True)
    records = []
    for n, record in enumerate(demo_dataset.records[:3]):
        name = f"images/my lesion (ü {n}).png" if n < 2 else "images/my_lesion_(__0).png"
        shutil.copy(demo_dataset.path_of(record), folder / name)
        records.append(record.__class__(**{**record.__dict__, "image": name}))
    Manifest(records, folder).write(folder)
    registry = DatasetCatalog(store, tmp_path / "cache")
    info = registry.publish(folder, name="odd", origin="local")
    fetched = registry.fetch(info.id)
    names = [r.image for r in fetched]
    assert len(set(names)) == 3 and all(" " not in n and "ü" not in n for n in names)
    assert [r.sha256 for r in fetched] == [r.sha256 for r in records]


def test_fetch_detects_corruption_and_refuses_references(
    store: ObjectStore, demo_dataset: Manifest, tmp_path: Path
) -> None:
    registry = DatasetCatalog(store, tmp_path / "cache")
    info = registry.publish(demo_dataset.root, name="demo", origin="local")
    store.put_bytes(f"datasets/{info.id}/{demo_dataset.records[0].image}", b"tampered")
    with pytest.raises(ManifestError, match="does not match its sha256"):
        registry.fetch(info.id)
    assert not (tmp_path / "cache" / "datasets" / info.id).exists()
    referencing = Manifest(
        [
            demo_dataset.records[0].__class__(
                **{**demo_dataset.records[0].__dict__, "image": str(demo_dataset.path_of(demo_dataset.records[0]))}
            )
        ],
        tmp_path / "ref",
    )
    referencing.write(tmp_path / "ref")
    with pytest.raises(ManifestError, match="outside"):
        registry.publish(tmp_path / "ref", name="ref", origin="local")


def test_unknown_and_malformed_ids(tmp_path: Path) -> None:
    registry = DatasetCatalog(FilesystemStore(tmp_path / "s"), tmp_path / "c")
    for dataset_id in ("ds-nope", "../etc", ""):
        with pytest.raises(DatasetNotFound):
            registry.get(dataset_id)
        assert not registry.exists(dataset_id)
    with pytest.raises(ValueError, match="not valid"):
        check_dataset_id("a/b")
