"""Issue 12, finding 10: the filesystem store never follows a symbolic link out of its root."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermasynth.storage import FilesystemStore, InvalidKey


@pytest.fixture
def linked(tmp_path: Path) -> FilesystemStore:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not the store's")
    store = FilesystemStore(tmp_path / "store")
    store.put_bytes("datasets/d1/a.txt", b"inside")
    (tmp_path / "store" / "datasets" / "d1" / "link.txt").symlink_to(outside / "secret.txt")
    (tmp_path / "store" / "escape").symlink_to(outside, target_is_directory=True)
    (tmp_path / "store" / "datasets" / "d1" / "alias.txt").symlink_to(tmp_path / "store" / "datasets" / "d1" / "a.txt")
    return store


@pytest.mark.parametrize("key", ["datasets/d1/link.txt", "escape/secret.txt"])
def test_reads_through_links_out_of_the_root_are_refused(linked: FilesystemStore, key: str, tmp_path: Path) -> None:
    for read in (linked.get_bytes, linked.exists, linked.size, lambda k: linked.get_file(k, tmp_path / "copy")):
        with pytest.raises(InvalidKey, match="outside the store"):
            read(key)
    with pytest.raises(InvalidKey):
        linked.copy(key, "datasets/d2/stolen.txt")
    assert not (tmp_path / "copy").exists()


def test_writes_and_deletes_through_links_out_of_the_root_are_refused(linked: FilesystemStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidKey):
        linked.put_bytes("escape/planted.txt", b"x")
    with pytest.raises(InvalidKey):
        linked.put_bytes("datasets/d1/link.txt", b"overwritten")
    with pytest.raises(InvalidKey):
        linked.delete("escape/secret.txt")
    assert not (tmp_path / "outside" / "planted.txt").exists()
    assert (tmp_path / "outside" / "secret.txt").read_bytes() == b"not the store's"


def test_listings_skip_links_out_of_the_root_but_keep_links_inside(linked: FilesystemStore) -> None:
    assert linked.list() == ["datasets/d1/a.txt", "datasets/d1/alias.txt"]
    assert linked.get_bytes("datasets/d1/alias.txt") == b"inside"
