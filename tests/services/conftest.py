"""Fixtures of the platform tests: isolated deployments with real Redis, workers and gateways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.platform import Platform


@pytest.fixture
def platform(redis_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A deployment of its own for one test (start its gateway and workers in the test)."""
    deployment = Platform(redis_url, tmp_path)
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture(scope="module")
def shared_platform(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A deployment shared by the tests of one module."""
    deployment = Platform(redis_url, tmp_path_factory.mktemp("platform"))
    try:
        yield deployment
    finally:
        deployment.close()
