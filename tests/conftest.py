"""Fixtures shared by the whole suite: small generated datasets and servers started on free ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.manifest import Manifest

# The real data sits beside the repository (../shared); DERMASYNTH_REAL_HAM10000 points elsewhere.
REAL_HAM10000 = Path(os.environ.get(
    "DERMASYNTH_REAL_HAM10000",
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_200x150",
))


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_real = pytest.mark.skip(reason=f"real HAM10000 not found at {REAL_HAM10000}")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "real_data" in item.keywords and not REAL_HAM10000.is_dir():
            item.add_marker(skip_real)
