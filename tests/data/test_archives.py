from __future__ import annotations

import io
import struct
import tracemalloc
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
    with pytest.raises(ArchiveRejected, match="more than the 4 accepted") as info:
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


# -- issue 12, finding 7: every central-directory entry counts, before the directory is parsed ----------


def _directory_heavy_zip(files: int, folders: int, macosx: int) -> bytes:
    members: dict[str, bytes] = {f"nv/f{i}.jpg": jpeg() for i in range(files)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for i in range(folders):
            archive.writestr(f"nv/empty{i}/", b"")
        for i in range(macosx):
            archive.writestr(f"__MACOSX/nv/._f{i}.jpg", b"x")
    return buffer.getvalue()


def test_folders_and_macosx_entries_count_against_the_file_limit(tmp_path: Path) -> None:
    limits = ArchiveLimits(max_files=10, max_expanded_bytes=32 << 20, max_ratio=100)
    with pytest.raises(ArchiveRejected) as caught:
        _extract(tmp_path, _directory_heavy_zip(files=4, folders=5, macosx=5), limits)
    assert caught.value.reason == "too_many_files"
    assert "__MACOSX" in str(caught.value) and "10" in str(caught.value)


def _bare_entries(count: int, *, declared: int) -> bytes:
    """A zip of ``count`` folder entries (central directory only) whose end record declares ``declared``."""
    entries = []
    for i in range(count):
        name = f"d{i:06d}/".encode()
        entries.append(
            b"PK\x01\x02" + b"\x14\x00" * 2 + b"\x00" * 20 + struct.pack("<3H", len(name), 0, 0) + b"\x00" * 12 + name
        )
    directory = b"".join(entries)
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, min(declared, 0xFFFF), min(declared, 0xFFFF), len(directory), 0, 0
    )
    return directory + end


def test_a_300k_entry_directory_is_refused_without_being_parsed(tmp_path: Path) -> None:
    data = _bare_entries(300_000, declared=300_000 % 0xFFFF)  # a 16-bit count that wrapped: the end record lies
    limits = ArchiveLimits(max_files=50_000, max_expanded_bytes=32 << 20, max_ratio=100)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveRejected) as caught:
            _extract(tmp_path, data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "too_many_files"
    assert peak < 16 << 20, f"peak {peak >> 20} MiB: the directory was materialised"  # ZipInfo objects: ~100 MiB


def test_a_declared_count_over_the_limit_is_refused_from_the_end_record_alone(tmp_path: Path) -> None:
    data = _bare_entries(3, declared=60_000)
    with pytest.raises(ArchiveRejected) as caught:
        _extract(tmp_path, data, ArchiveLimits(max_files=50_000, max_expanded_bytes=32 << 20, max_ratio=100))
    assert caught.value.reason == "too_many_files" and "60000" in str(caught.value)
