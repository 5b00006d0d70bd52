"""Worker tasks run in this process (Celery's ``apply``) against a platform's Redis and store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dermasynth.config import get_settings
from services.worker.resources import WorkerResources, worker_resources
from tests.services.platform import Platform


def use_platform(platform: Platform, monkeypatch: pytest.MonkeyPatch, **extra: str) -> WorkerResources:
    """The worker's resources for ``platform``'s settings (plus ``extra`` variables), fresh from the environment."""
    for name, value in {**platform.env, "DERMASYNTH_CACHE_ROOT": str(platform.root / "cache"), **extra}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    worker_resources.cache_clear()
    return worker_resources()


@pytest.fixture
def resources(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerResources]:
    yield use_platform(platform, monkeypatch)
    get_settings.cache_clear()
    worker_resources.cache_clear()
