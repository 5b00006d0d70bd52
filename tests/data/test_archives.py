from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import pytest

from dermasynth.data.archives import ArchiveLimits, ArchiveRejected, extract_archive
from tests.data.samples import jpeg
from tests.data.zips import BAD_UPLOADS, imagefolder_zip, zip_members

LIMITS = ArchiveLimits(max_files=100, max_expanded_bytes=32 << 20, max_ratio=100)


def _extract(tmp_path: Path, data: bytes, limits: ArchiveLimits = LIMITS) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "upload.zip"
    source.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    return extract_archive(source, dest, limits)


def test_extracts_a_dataset_and_steps_into_a_wrapping_folder(tmp_path: Path) -> None:
    root = _extract(
        tmp_path, zip_members({"demo/nv/a.jpg": jpeg(), "demo/mel/b.jpg": jpeg(), "__MACOSX/demo/._a.jpg": b"junk"})
    )
    assert root == tmp_path / "out" / "demo"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg")) == ["mel/b.jpg", "nv/a.jpg"]
    assert not (tmp_path / "out" / "__MACOSX").exists()


def test_a_lone_class_folder_is_not_mistaken_for_a_wrapper(tmp_path: Path) -> None:
    root = _extract(tmp_path, imagefolder_zip(classes=("nv",)))
    assert root == tmp_path / "out"


@pytest.mark.parametrize("name", [n for n in BAD_UPLOADS if n != "manifest-escape"])
def test_bad_archives_are_refused_with_a_reason(tmp_path: Path, name: str) -> None:
    data, reason = BAD_UPLOADS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ArchiveRejected) as info:
            _extract(tmp_path, data, ArchiveLimits(100, 32 << 20, 100))
    assert info.value.reason == reason, str(info.value)
    assert str(info.value)
    assert not list((tmp_path.parent).glob("evil*")) and not Path("/tmp/nv/a.jpg").exists()


def test_limits_on_file_count_and_total_size(tmp_path: Path) -> None:
    data = imagefolder_zip(n_per_class=3)
    with pytest.raises(ArchiveRejected, match="more than 4 files") as info:
        _extract(tmp_path / "a", data, ArchiveLimits(4, 32 << 20, 100))
    assert info.value.reason == "too_many_files"
    with pytest.raises(ArchiveRejected, match="expands to") as info:
        _extract(tmp_path / "b", data, ArchiveLimits(100, 1000, 100))
    assert info.value.reason == "zip_bomb"


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("nv/a.jpg", jpeg())
            archive.writestr("nv/A.jpg", jpeg())
    with pytest.raises(ArchiveRejected, match="twice"):
        _extract(tmp_path, buffer.getvalue())
