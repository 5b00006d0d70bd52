"""The gateway in-process (ASGI) over a real Redis and a filesystem store, for API-level tests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dermasynth.auth import Scope
from dermasynth.auth.keys import DEFAULT_OWNER
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.manifest import Manifest
from dermasynth.data.uploads import ingest_archive, ingest_options
from dermasynth.storage import open_store
from services.gateway.app import create_app
from services.gateway.services import Services
from tests.data.zips import zip_folder
from tests.services.platform import Platform


@pytest.fixture(scope="module")
def app(shared_platform: Platform) -> Iterator[FastAPI]:
    services = Services.from_settings(shared_platform.settings)
    try:
        yield create_app(services=services)
    finally:
        services.close()


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def engineer(shared_platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {shared_platform.key(Scope.ENGINEER)}"}


@pytest.fixture(scope="module")
def clinician(shared_platform: Platform) -> dict[str, str]:
    return {"X-API-Key": shared_platform.key(Scope.CLINICIAN)}


def publish_zip(platform: Platform, archive: bytes, name: str, owner: str = DEFAULT_OWNER, **form: Any) -> str:
    """Import a zip as a dataset of ``owner`` with the library code an ingest job runs (no worker needed);
    its id. For tests that only need a dataset to exist; the upload endpoint itself is tested with a worker."""
    settings = platform.settings
    registry = DatasetCatalog(open_store(settings), settings.cache_root)
    options = ingest_options(
        settings,
        fmt=str(form.get("format", "auto")),
        seed=int(form.get("seed", 0)),
        val_frac=float(form.get("val_frac", 0.15)),
        test_frac=float(form.get("test_frac", 0.15)),
        owner=owner,
    )
    info, _ = ingest_archive(registry, io.BytesIO(archive), name=name, options=options)
    return info.id


@pytest.fixture(scope="module")
def dataset_id(shared_platform: Platform, demo_dataset: Manifest) -> str:
    return publish_zip(shared_platform, zip_folder(demo_dataset.root, wrap="demo"), "demo")


@pytest.fixture(scope="module")
def admin(shared_platform: Platform) -> dict[str, str]:
    return {"X-API-Key": shared_platform.key(Scope.ADMIN)}
