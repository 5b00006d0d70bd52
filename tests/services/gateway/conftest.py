"""The gateway in-process (ASGI) over a real Redis and a filesystem store, for API-level tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dermasynth.auth import Scope
from dermasynth.data.manifest import Manifest
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


@pytest.fixture(scope="module")
def dataset_id(client: TestClient, engineer: dict[str, str], demo_dataset: Manifest) -> str:
    response = client.post(
        "/v1/datasets",
        headers=engineer,
        data={"name": "demo"},
        files={"file": ("demo.zip", zip_folder(demo_dataset.root, wrap="demo"), "application/zip")},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["dataset"]["id"])


@pytest.fixture(scope="module")
def admin(shared_platform: Platform) -> dict[str, str]:
    return {"X-API-Key": shared_platform.key(Scope.ADMIN)}
