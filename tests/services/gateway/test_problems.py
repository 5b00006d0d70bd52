"""One error shape: every error status answers RFC 9457 problem+json with a stable ``reason``, including
FastAPI's own validation errors, unknown routes, the body-size limit and a backend that is down; the
OpenAPI schema declares it for every operation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from dermasynth.jobs import JobState
from services.gateway.app import create_app
from services.gateway.errors import DOCUMENTED_STATUSES, PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from services.gateway.services import Services
from tests.conftest import free_port
from tests.services.platform import Platform


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """The response is a problem of this status and reason, and says what was wrong."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["reason"] == reason, body
    assert body["type"] == f"{PROBLEM_TYPE_BASE}{reason}" and body["title"]
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10, body
    return body


def test_401_403_404_405_409_422(client: TestClient, engineer: dict[str, str], clinician: dict[str, str]) -> None:
    missing = assert_problem(client.get("/v1/jobs"), 401, "unauthorized")
    assert "X-API-Key" in missing["detail"] and missing["instance"] == "/v1/jobs"
    assert client.get("/v1/jobs").headers["www-authenticate"] == "Bearer"
    assert_problem(client.get("/v1/jobs", headers={"X-API-Key": "dsk_forged_secret"}), 401, "unauthorized")
    assert "engineer scope" in assert_problem(client.get("/v1/jobs", headers=clinician), 403, "forbidden")["detail"]
    assert_problem(client.get(f"/v1/jobs/{'0' * 32}", headers=engineer), 404, "not_found")
    assert (
        "no such path" in assert_problem(client.get("/v1/nothing-here", headers=engineer), 404, "not_found")["detail"]
    )
    assert_problem(client.delete("/v1/jobs", headers=engineer), 405, "method_not_allowed")
    invalid = assert_problem(
        client.get("/v1/jobs", headers=engineer, params={"limit": 0, "state": "sleeping"}), 422, "invalid_request"
    )
    assert {tuple(e["loc"]) for e in invalid["errors"]} == {("query", "limit"), ("query", "state")}
    assert "query.limit" in invalid["detail"] and "query.state" in invalid["detail"]
    body = assert_problem(client.post("/v1/jobs", headers=engineer, json={"kind": "dreaming"}), 422, "invalid_request")
    assert "kind" in body["detail"]
    unknown = client.post("/v1/jobs", headers=engineer, json={"kind": "training", "params": {"dataset_id": "ds-no"}})
    assert_problem(unknown, 422, "unknown_reference")


def test_409_on_a_final_job(client: TestClient, engineer: dict[str, str], dataset_id: str) -> None:
    job = client.post("/v1/jobs", headers=engineer, json={"kind": "training", "params": {"dataset_id": dataset_id}})
    cancel = f"/v1/jobs/{job.json()['id']}/cancel"
    assert client.post(cancel, headers=engineer).json()["state"] == JobState.CANCELLED
    again = assert_problem(client.post(cancel, headers=engineer), 409, "invalid_transition")
    assert "cancelled" in again["detail"]


def test_413_over_the_body_limit(shared_platform: Platform, engineer: dict[str, str]) -> None:
    services = Services.from_settings(shared_platform.settings.model_copy(update={"max_upload_bytes": 4096}))
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as small:
            files = {"file": ("big.zip", b"\0" * 10_000, "application/zip")}
            response = small.post("/v1/datasets", headers=engineer, data={"name": "big"}, files=files)
            assert_problem(response, 413, "too_large")
    finally:
        services.close()


def test_429_and_any_http_exception_become_problems(shared_platform: Platform, engineer: dict[str, str]) -> None:
    services = Services.from_settings(shared_platform.settings)
    app = create_app(services=services)

    @app.get("/limited")
    def limited() -> None:
        raise HTTPException(429, "slow down: at most 10 requests a second per key", {"Retry-After": "1"})

    try:
        with TestClient(app, raise_server_exceptions=False) as test_client:
            response = test_client.get("/limited", headers=engineer)
            assert_problem(response, 429, "too_many_requests")
            assert response.headers["retry-after"] == "1"
    finally:
        services.close()


def test_503_when_redis_is_down(shared_platform: Platform, engineer: dict[str, str]) -> None:
    down = f"redis://127.0.0.1:{free_port()}/11"
    services = Services.from_settings(shared_platform.settings.model_copy(update={"redis_url": down}))
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as test_client:
            response = test_client.get("/v1/jobs", headers=engineer)
            body = assert_problem(response, 503, "unavailable")
            assert "unavailable" in body["detail"] and response.headers["retry-after"]
    finally:
        services.close()


@pytest.mark.parametrize("status", DOCUMENTED_STATUSES)
def test_openapi_declares_the_problem_shape(app: FastAPI, status: str) -> None:
    spec = app.openapi()
    assert set(spec["components"]["schemas"]["Problem"]["required"]) >= {"type", "title", "status", "detail", "reason"}
    for route, path in spec["paths"].items():
        if route.startswith("/v1/health"):
            continue
        for method, operation in path.items():
            response = operation["responses"][status]
            schema = response["content"][PROBLEM_MEDIA_TYPE]["schema"]
            assert "Problem" in str(schema), (method, route, status)
            assert "application/json" not in response["content"]
    assert "HTTPValidationError" not in str(spec)
