"""One contract, two backends: the filesystem store and the S3 store over HTTP (moto's S3 server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from dermasynth.config import Settings
from dermasynth.storage import (
    FilesystemStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    PrefixedStore,
    S3Store,
    open_store,
)


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "filesystem":
        yield FilesystemStore(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        yield S3Store(endpoint, "test", "test-secret", f"t-{uuid.uuid4().hex[:12]}")


def test_put_get_replace(store: ObjectStore) -> None:
    store.put_bytes("runs/j1/metrics.json", b'{"a": 1}', "application/json")
    assert store.get_bytes("runs/j1/metrics.json") == b'{"a": 1}'
    store.put_bytes("runs/j1/metrics.json", b"{}")
    assert store.get_bytes("runs/j1/metrics.json") == b"{}"
    assert store.size("runs/j1/metrics.json") == 2
    assert store.exists("runs/j1/metrics.json") and not store.exists("runs/j1/other")


def test_missing_objects(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="no object under key 'nope/x'"):
        store.get_bytes("nope/x")
    with pytest.raises(ObjectNotFound):
        store.get_file("nope/x", tmp_path / "x")
    with pytest.raises(ObjectNotFound):
        store.size("nope/x")
    with pytest.raises(ObjectNotFound):
        store.copy("nope/x", "nope/y")
    store.delete("nope/x")  # deleting what is not there is fine


def test_files_list_copy_delete(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 100)
    store.put_file("datasets/d1/images/a.png", src)
    store.put_bytes("datasets/d1/manifest.csv", b"x")
    store.put_bytes("datasets/d10/manifest.csv", b"y")
    store.get_file("datasets/d1/images/a.png", tmp_path / "deep" / "out.bin")
    assert (tmp_path / "deep" / "out.bin").read_bytes() == src.read_bytes()
    assert store.list("datasets/d1/") == ["datasets/d1/images/a.png", "datasets/d1/manifest.csv"]
    assert len(store.list("datasets/d1")) == 3
    assert store.list() == sorted(store.list())
    store.copy("datasets/d1/manifest.csv", "datasets/d2/manifest.csv")
    assert store.get_bytes("datasets/d2/manifest.csv") == b"x"
    store.delete("datasets/d1/images/a.png")
    assert store.list("datasets/d1/") == ["datasets/d1/manifest.csv"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b", "trailing/", "sp ace", "back\\slash"])
def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey, match="object key"):
        store.put_bytes(key, b"x")


def test_presigned_url(store: ObjectStore) -> None:
    store.put_bytes("runs/j/report.md", b"# report")
    url = store.presigned_url("runs/j/report.md", timedelta(minutes=5))
    if isinstance(store, FilesystemStore):
        assert url is None  # the gateway streams instead
    else:
        assert url is not None
        assert httpx.get(url).content == b"# report"


def test_presigned_urls_name_the_public_endpoint(s3_endpoint: str) -> None:
    """Services reach S3 at one address, users at another (minio:9000 vs. a public host): URLs are for users."""
    port = s3_endpoint.rsplit(":", 1)[1]
    settings = Settings(
        store="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket=f"t-{uuid.uuid4().hex[:12]}",
        s3_public_endpoint=f"localhost:{port}",
    )
    store = open_store(settings)
    store.put_bytes("runs/j/report.md", b"# report")
    url = store.presigned_url("runs/j/report.md", timedelta(minutes=5))
    assert url is not None and httpx.URL(url).host == "localhost"
    assert httpx.get(url).content == b"# report"


def test_prefixed_view(store: ObjectStore) -> None:
    run = PrefixedStore(store, "runs/job-1")
    run.put_bytes("checkpoint.pth", b"ck")
    run.put_bytes("epochs/001.pth", b"e1")
    store.put_bytes("runs/job-10/checkpoint.pth", b"other job")
    assert store.get_bytes("runs/job-1/checkpoint.pth") == b"ck"
    assert run.list() == ["checkpoint.pth", "epochs/001.pth"]
    run.copy("checkpoint.pth", "best.pth")
    assert run.get_bytes("best.pth") == b"ck" and run.exists("best.pth")
    with pytest.raises(InvalidKey):
        run.get_bytes("../job-10/checkpoint.pth")
