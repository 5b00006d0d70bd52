"""Nothing reaches the platform without a key; clinician keys cannot reach engineer endpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dermasynth.auth import RedisApiKeyStore, Scope
from tests.services.platform import PEPPER, Platform

OPEN = {"/v1/health/live", "/v1/health/ready"}
CLINICIAN_TAGS = {"predictions", "audit"}  # and admin-only routes


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]*\}", lambda m: "0" * 32 if "job_id" in m.group() else "ds-x", path)


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    ]


def _engineer_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, concrete path) that needs a key and is not a clinician's (predictions)."""
    return [
        (method, _concrete(path))
        for method, path, operation in _operations(app)
        if operation.get("security") and not CLINICIAN_TAGS & set(operation.get("tags", []))
    ]


def test_every_operation_is_open_on_purpose_or_needs_a_key(app: FastAPI) -> None:
    engineer = {path for _, path in _engineer_routes(app)}
    assert {"/v1/jobs", "/v1/datasets", f"/v1/jobs/{'0' * 32}/cancel", "/v1/datasets/register"} <= engineer
    for method, path, operation in _operations(app):
        assert operation.get("security") or path in OPEN, f"{method} {path} needs no key and is not listed as open"


def test_without_a_key_engineer_endpoints_refuse(app: FastAPI, client: TestClient) -> None:
    for method, path in _engineer_routes(app):
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert "missing API key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_clinician_key_is_forbidden(app: FastAPI, client: TestClient, clinician: dict[str, str]) -> None:
    for method, path in _engineer_routes(app):
        response = client.request(method, path, headers=clinician)
        assert response.status_code == 403, (method, path, response.text)
        assert re.search(r"needs the (engineer|deployer) scope", response.json()["detail"])


@pytest.mark.parametrize(
    "header",
    [
        {"Authorization": "Bearer not-a-key"},
        {"X-API-Key": "dsk_000000000000_" + "a" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_bad_keys_are_refused(client: TestClient, header: dict[str, str]) -> None:
    response = client.get("/v1/jobs", headers=header)
    assert response.status_code == 401 and response.json()["detail"]


def test_revoked_keys_stop_working_at_once(client: TestClient, shared_platform: Platform) -> None:
    keys = RedisApiKeyStore(redis.Redis.from_url(shared_platform.redis_url), PEPPER, shared_platform.prefix)
    issued = keys.create("short-lived", [Scope.ENGINEER])
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    keys.revoke(issued.key.id)
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_open_endpoints(client: TestClient, shared_platform: Platform) -> None:
    admin = {"X-API-Key": shared_platform.key(Scope.ADMIN)}
    assert client.get("/v1/health/live").json() == {"status": "live"}
    ready = client.get("/v1/health/ready")
    assert ready.json()["checks"] == {}  # backend errors name hosts: detail only for admin keys
    checks = client.get("/v1/health/ready", headers=admin).json()["checks"]
    assert set(checks) == {"redis", "store", "triton"} and checks["redis"] == checks["store"] == "ok"
    assert (ready.status_code == 200) == (checks["triton"] == "ok")  # these tests run no tritonserver
    assert "dermasynth_http_requests_total" in client.get("/metrics", headers=admin).text


def test_requests_are_counted_by_route_template_and_status(client: TestClient, shared_platform: Platform) -> None:
    admin = {"X-API-Key": shared_platform.key(Scope.ADMIN)}
    for _ in range(3):
        assert client.get("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 401
    assert client.get("/no/such/path", headers=admin).status_code == 404
    assert client.get("/v1/jobs/0123456789abcdef0123456789abcdef", headers=admin).status_code == 404
    text = client.get("/metrics", headers=admin).text
    line = 'dermasynth_http_requests_total{method="GET",route="unmatched",status="401"}'  # refused before routing
    assert any(row.startswith(line) and float(row.split()[-1]) >= 3 for row in text.splitlines()), text
    assert 'route="unmatched",status="404"' in text
    assert 'dermasynth_http_request_seconds_count{method="GET",route="/v1/jobs/{job_id}"}' in text
