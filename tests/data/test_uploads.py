"""Uploads and store prefixes turned into published datasets: validated, stripped, all or nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dermasynth.data.archives import ArchiveLimits, ArchiveRejected
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.formats import FormatError
from dermasynth.data.manifest import Manifest
from dermasynth.data.uploads import (
    IngestOptions,
    NothingAccepted,
    check_store_prefix,
    ingest_archive,
    ingest_store_prefix,
)
from dermasynth.storage import FilesystemStore
from tests.data.samples import jpeg
from tests.data.zips import BAD_UPLOADS, imagefolder_zip, undecodable_zip, zip_folder, zip_members

OPTIONS = IngestOptions(limits=ArchiveLimits(1000, 64 << 20, 100))


def _registry(tmp_path: Path) -> DatasetCatalog:
    return DatasetCatalog(FilesystemStore(tmp_path / "store"), tmp_path / "cache")


def _zip(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    return path


def test_upload_a_zipped_demo_dataset(tmp_path: Path, demo_dataset: Manifest) -> None:
    registry = _registry(tmp_path)
    info, report = ingest_archive(
        registry, _zip(tmp_path, zip_folder(demo_dataset.root, wrap="demo")), name="demo", options=OPTIONS
    )
    assert report.format == "manifest" and report.accepted == len(demo_dataset) and report.rejected == 0
    assert info.origin == "upload" and info.stats.images == len(demo_dataset)
    assert registry.store.exists(f"datasets/{info.id}/import_report.json")


def test_stored_images_carry_no_metadata(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    info, report = ingest_archive(
        registry, _zip(tmp_path, imagefolder_zip(n_per_class=4, exif=True)), name="exif", options=OPTIONS
    )
    assert report.format == "imagefolder" and report.accepted == 8
    stored = [k for k in registry.store.list(f"datasets/{info.id}/images/")]
    assert len(stored) == 8
    for key in stored:
        data = registry.store.get_bytes(key)
        assert b"patient" not in data and b"CameraMaker" not in data and b"Exif" not in data
        with Image.open(io.BytesIO(data)) as img:
            assert not img.getexif()


def test_partly_bad_uploads_keep_the_good_images_and_report_the_rest(tmp_path: Path) -> None:
    members = {f"nv/good_{i}.jpg": jpeg() for i in range(4)} | {"mel/good.jpg": jpeg(), "nv/broken.jpg": b"xx"}
    info, report = ingest_archive(
        _registry(tmp_path), _zip(tmp_path, zip_members(members)), name="mixed", options=OPTIONS
    )
    assert report.accepted == 5 and report.rejected == 1 and report.rejections[0].file == "nv/broken.jpg"
    assert info.stats.images == 5


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (undecodable_zip(), NothingAccepted),
        (zip_members({"readme.txt": b"hello", "data.bin": b"\x00" * 10}), FormatError),
        (BAD_UPLOADS["manifest-escape"][0], ArchiveRejected),
        (BAD_UPLOADS["dotdot"][0], ArchiveRejected),
    ],
)
def test_refused_uploads_leave_nothing_behind(tmp_path: Path, data: bytes, error: type[Exception]) -> None:
    registry = _registry(tmp_path)
    with pytest.raises(error):
        ingest_archive(registry, _zip(tmp_path, data), name="bad", options=OPTIONS)
    assert registry.store.list() == []


def test_register_a_prefix_already_in_the_store(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    for label in ("bcc", "df"):
        for i in range(3):
            registry.store.put_bytes(f"incoming/default/set1/{label}/{i}.jpg", jpeg((30 * i, 100, 50)))
    checked = check_store_prefix(registry.store, "incoming/default/set1", "default", OPTIONS.limits)
    info, report = ingest_store_prefix(registry, registry.store, checked, name="set1", options=OPTIONS)
    assert info.origin == "store" and report.accepted == 6 and info.stats.classes == {"bcc": 3, "df": 3}
    with pytest.raises(ArchiveRejected, match="nothing is stored"):
        check_store_prefix(registry.store, "incoming/default/none", "default", OPTIONS.limits)
    small = IngestOptions(limits=ArchiveLimits(2, 1 << 20, 100))
    with pytest.raises(ArchiveRejected, match="more than the 2"):
        check_store_prefix(registry.store, "incoming/default/set1", "default", small.limits)
