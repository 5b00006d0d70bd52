"""Fixtures shared by the whole suite: small generated datasets and servers started on free ports."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

# Set before torch loads: OpenMP threads that spin while waiting starve the other processes the tests
# start (workers, gateway, tritonserver) on a 2-core machine; measured 4x slower training steps.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Decoded-image caches (issue 13) and fetched datasets go to a per-session folder, never into var/cache.
if "DERMASYNTH_CACHE_ROOT" not in os.environ:
    os.environ["DERMASYNTH_CACHE_ROOT"] = tempfile.mkdtemp(prefix="dermasynth-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DERMASYNTH_CACHE_ROOT"], True)

import pytest

from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.manifest import Manifest

# A trained, exported classifier served by one real tritonserver per session (started on first use).
pytest_plugins = ["tests.triton_fixtures"]

# The real data sits beside the repository (../shared); DERMASYNTH_REAL_HAM10000 points elsewhere.
REAL_HAM10000 = Path(
    os.environ.get(
        "DERMASYNTH_REAL_HAM10000",
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_200x150",
    )
)
# Tests keep their Redis keys on DB 11 under a prefix unique to each test, and delete them afterwards.
TEST_REDIS_URL = os.environ.get("DERMASYNTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """A small generated dataset (140 images, 32 px high), shared read-only by the session's tests."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), count=140, size=32, seed=7)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 server over HTTP (moto), on a free port, for the S3 code paths."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (a real server; tests that need it are skipped, saying so, when it is not running)."""
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {TEST_REDIS_URL} ({exc}); start redis-server or set DERMASYNTH_TEST_REDIS_URL")
    return TEST_REDIS_URL


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (only the keys a test made; never the whole database)."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test on the test Redis; its keys are deleted afterwards."""
    prefix = f"dstest-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_redis_prefix(redis_url, prefix)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_real = pytest.mark.skip(reason=f"real HAM10000 not found at {REAL_HAM10000}")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "real_data" in item.keywords and not REAL_HAM10000.is_dir():
            item.add_marker(skip_real)
