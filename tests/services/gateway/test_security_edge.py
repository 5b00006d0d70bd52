"""Issue 12 at the gateway's edge: keys before bodies (3), per-route body limits (3), pixel budgets (4),
internal endpoints (12), authentication that long uploads cannot stall (13), rate limits and the audit trail."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.auth.audit import AuditEntry, AuditLog
from dermasynth.config import Settings
from services.gateway.app import create_app
from services.gateway.metrics import serve_internal_metrics
from services.gateway.services import Services
from tests.conftest import free_port
from tests.services.platform import PEPPER, Platform

MIB = 1 << 20


def _key(platform: Platform, owner: str, *scopes: Scope) -> str:
    keys = RedisApiKeyStore(redis.Redis.from_url(platform.redis_url), PEPPER, platform.prefix)
    return keys.create("security tests", list(scopes), owner).token


async def _asgi(app: FastAPI, method: str, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    """Call the app as a server would, streaming ``chunks``; returns (status, chunks the app pulled)."""
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= len(chunks):
            await anyio.sleep(3600)  # a client that sends nothing more
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    with anyio.fail_after(20):
        await app(scope, receive, send)
    return status, pulled


def _call(app: FastAPI, method: str, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    return anyio.run(_asgi, app, method, path, headers, chunks)


# -- finding 3: the key is checked before the body is read; per-route body limits -----------------------


@pytest.mark.parametrize(
    ("path", "content_type", "first"),
    [
        ("/v1/jobs", "application/json", b'{"kind": "training", "params": {"x": "'),
        (
            "/v1/datasets",
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n',
        ),
        ("/v1/predictions", "multipart/form-data; boundary=b", b"--b\r\n"),
    ],
)
def test_an_unauthenticated_body_is_never_read(app: FastAPI, path: str, content_type: str, first: bytes) -> None:
    chunks = [first] + [b"x" * MIB] * 50  # 50 MiB, streamed without a Content-Length
    status, pulled = _call(app, "POST", path, {"content-type": content_type}, chunks)
    assert status == 401
    assert pulled == 0, f"{pulled} chunks of the body were read before the 401"


def test_json_routes_take_small_bodies_and_say_which_setting(app: FastAPI, client: TestClient, engineer: Any) -> None:
    declared = client.post(
        "/v1/jobs", headers={**engineer, "content-type": "application/json"}, content=b"{" + b" " * MIB + b"}"
    )
    assert declared.status_code == 413
    assert "DERMASYNTH_MAX_JSON_BODY_BYTES" in declared.json()["detail"]
    chunks = [b'{"kind": "'] + [b" " * (64 * 1024)] * 16  # 1 MiB, no Content-Length
    status, pulled = _call(app, "POST", "/v1/jobs", {**engineer, "content-type": "application/json"}, chunks)
    assert status == 413 and pulled <= 6  # stopped soon after the 256 KiB limit


# -- finding 4: pixel budgets before decoding; a cap on explained images ---------------------------------


def _png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clinician_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:  # runs the lifespan: inference is built
        yield test_client


def test_a_small_file_of_many_pixels_is_refused_before_decoding(
    clinician_client: TestClient, clinician: dict[str, str]
) -> None:
    bomb = _png((7000, 7000))  # ~50 KB on the wire, 147 MB decoded
    assert len(bomb) < 200_000
    response = clinician_client.post("/v1/predictions", files=[("images", ("big.png", bomb))], headers=clinician)
    assert response.status_code == 422, response.text
    [result] = response.json()["results"]
    assert result["reason"] == "too_large" and "DERMASYNTH_MAX_PREDICTION_IMAGE_PIXELS" in result["detail"]


def test_the_request_has_a_pixel_budget(clinician_client: TestClient, clinician: dict[str, str]) -> None:
    image = _png((4800, 4800))  # 23 Mpx each: under the per-image limit
    files = [("images", (f"{i}.png", image)) for i in range(9)]  # 207 Mpx in all
    response = clinician_client.post("/v1/predictions", files=files, headers=clinician)
    assert response.status_code == 422 and response.json()["reason"] == "bad_request"
    assert "DERMASYNTH_MAX_PREDICTION_REQUEST_PIXELS" in response.json()["detail"]


def test_explanations_are_capped_per_request(clinician_client: TestClient, clinician: dict[str, str]) -> None:
    files = [("images", (f"{i}.png", _png((64, 64), "RGB"))) for i in range(5)]
    response = clinician_client.post("/v1/predictions?explain=true", files=files, headers=clinician)
    assert response.status_code == 422 and "DERMASYNTH_MAX_EXPLAINED_IMAGES" in response.json()["detail"]


# -- finding 13: long work in the shared thread pool does not stall authentication ------------------------


def test_authentication_answers_while_the_shared_thread_pool_is_full(app: FastAPI, shared_platform: Platform) -> None:
    admin = {"X-API-Key": _key(shared_platform, "ops", Scope.ADMIN)}

    async def main() -> tuple[int, int]:
        pool = anyio.to_thread.current_default_thread_limiter()
        borrowers = [object() for _ in range(int(pool.total_tokens))]
        for borrower in borrowers:  # what 40 long uploads or registrations do to the pool
            pool.acquire_on_behalf_of_nowait(borrower)
        try:
            with anyio.fail_after(10):
                refused, _ = await _asgi(app, "GET", "/v1/jobs", {"X-API-Key": "dsk_0123456789ab_" + "a" * 43}, [b""])
                metrics, _ = await _asgi(app, "GET", "/metrics", admin, [b""])
        finally:
            for borrower in borrowers:
                pool.release_on_behalf_of(borrower)
        return refused, metrics

    assert anyio.run(main) == (401, 200)


# -- finding 12: metrics, readiness detail and docs -----------------------------------------------------


def test_metrics_need_an_admin_key_on_the_public_port(
    client: TestClient, engineer: dict[str, str], shared_platform: Platform
) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=engineer).status_code == 403
    admin = {"X-API-Key": _key(shared_platform, "ops", Scope.ADMIN)}
    assert "dermasynth_http_requests_total" in client.get("/metrics", headers=admin).text


def test_metrics_are_served_on_the_internal_port(app: FastAPI) -> None:
    port = free_port()
    server = serve_internal_metrics(app, port)
    assert server is not None
    try:
        assert "dermasynth_http_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()


def test_readiness_detail_only_for_admin_keys(client: TestClient, shared_platform: Platform) -> None:
    anonymous = client.get("/v1/health/ready").json()
    assert anonymous["checks"] == {} and anonymous["status"] in ("ready", "unready")
    admin = {"X-API-Key": _key(shared_platform, "ops", Scope.ADMIN)}
    assert set(client.get("/v1/health/ready", headers=admin).json()["checks"]) >= {"redis", "store"}


def test_docs_can_be_switched_off(shared_platform: Platform, engineer: dict[str, str]) -> None:
    services = Services.from_settings(shared_platform.settings.model_copy(update={"docs_enabled": False}))
    try:
        app = create_app(services=services)
        with TestClient(app) as client:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert client.get(path).status_code == 401
                assert client.get(path, headers=engineer).status_code == 404
    finally:
        services.close()


# -- per-key rate limits (429 + Retry-After) and the audit trail ------------------------------------------


def test_rate_limits_per_key(shared_platform: Platform) -> None:
    services = Services.from_settings(shared_platform.settings.model_copy(update={"rate_limit_per_minute": 3}))
    headers = {"X-API-Key": _key(shared_platform, "team-r", Scope.ENGINEER)}
    other = {"X-API-Key": _key(shared_platform, "team-r", Scope.ENGINEER)}
    if time.time() % 60 > 55:  # stay inside one window
        time.sleep(61 - time.time() % 60)
    try:
        with TestClient(create_app(services=services)) as client:
            assert [client.get("/v1/jobs", headers=headers).status_code for _ in range(3)] == [200] * 3
            limited = client.get("/v1/jobs", headers=headers)
            assert limited.status_code == 429 and limited.json()["reason"] == "rate_limited"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert client.get("/v1/jobs", headers=other).status_code == 200  # per key
    finally:
        services.close()


def test_the_default_rate_limit_lets_its_budget_through_then_refuses(shared_platform: Platform) -> None:
    """What users run: the default budget per key and minute, not the small one above."""
    budget = Settings.model_fields["rate_limit_per_minute"].default
    services = Services.from_settings(shared_platform.settings.model_copy(update={"rate_limit_per_minute": budget}))
    headers = {"X-API-Key": _key(shared_platform, "team-d", Scope.ENGINEER)}
    if time.time() % 60 > 30:  # the budget's requests must all fall inside one window
        time.sleep(61 - time.time() % 60)
    window = int(time.time() // 60)
    try:
        with TestClient(create_app(services=services)) as client:
            codes = [client.get("/v1/jobs", headers=headers, params={"limit": 1}).status_code for _ in range(budget)]
            limited = client.get("/v1/jobs", headers=headers, params={"limit": 1})
        if int(time.time() // 60) != window:
            pytest.skip("the requests straddled a minute window on this machine")
        assert codes == [200] * budget
        assert limited.status_code == 429 and limited.json()["reason"] == "rate_limited"
    finally:
        services.close()


def test_the_audit_trail_records_who_did_what(
    clinician_client: TestClient, shared_platform: Platform, clinician: dict[str, str]
) -> None:
    engineer = _key(shared_platform, "team-audit", Scope.ENGINEER)
    headers = {"X-API-Key": engineer}
    clinician_client.post("/v1/jobs", headers=headers, json={"kind": "training", "params": {"dataset_id": "ds-none"}})
    clinician_client.post("/v1/predictions", files=[("images", ("lesion.png", _png((7000, 7000))))], headers=clinician)
    assert clinician_client.get("/v1/audit", headers=headers).status_code == 403
    admin = {"X-API-Key": _key(shared_platform, "ops", Scope.ADMIN)}
    entries = clinician_client.get("/v1/audit", headers=admin, params={"owner": "team-audit"}).json()["entries"]
    [job] = [e for e in entries if e["action"] == "POST /v1/jobs"]
    assert job["owner"] == "team-audit" and job["key_id"] == engineer.split("_")[1] and job["status"] == 422
    predictions = clinician_client.get("/v1/audit", headers=admin, params={"action": "/v1/predictions"}).json()
    entry = predictions["entries"][0]
    assert entry["images"] == 1 and entry["model"] == "classifier" and entry["owner"] == "default"
    raw = redis.Redis.from_url(shared_platform.redis_url).xrange(f"{shared_platform.prefix}:audit")
    assert all(
        set(fields)
        <= {
            *(b"time_ms", b"key_id", b"owner", b"action", b"resource", b"status"),
            *(b"on_behalf_of", b"model", b"model_version", b"images"),
        }
        for _, fields in raw
    )  # never image content


def test_only_delegate_keys_name_the_person_they_act_for_in_the_audit_trail(
    client: TestClient, shared_platform: Platform
) -> None:
    service = _key(shared_platform, "team-web", Scope.ENGINEER, Scope.DELEGATE)  # the web app's key
    ordinary = _key(shared_platform, "team-web", Scope.ENGINEER)
    body = {"kind": "training", "params": {"dataset_id": "ds-none"}}
    person = {"X-DermaSynth-On-Behalf-Of": "dr.jones@example.org"}
    delegated = client.post("/v1/jobs", headers={"X-API-Key": service, **person}, json=body)
    assert delegated.status_code == 422 and delegated.json()["reason"] == "unknown_reference"  # ran, then audited
    refused = client.post("/v1/jobs", headers={"X-API-Key": ordinary, **person}, json=body)
    assert refused.status_code == 403 and refused.json()["reason"] == "delegation_refused"
    assert "delegate scope" in refused.json()["detail"]
    for bad in ("dr.jones@example.org; admin", " dr.jones", "x" * 255, ""):
        malformed = client.post("/v1/jobs", headers={"X-API-Key": service, "X-DermaSynth-On-Behalf-Of": bad}, json=body)
        assert malformed.status_code == 400 and malformed.json()["reason"] == "invalid_on_behalf_of", bad
        assert "1-254 ASCII letters" in malformed.json()["detail"]
    client.post("/v1/jobs", headers={"X-API-Key": service}, json=body)  # the service key on its own account

    admin = {"X-API-Key": _key(shared_platform, "ops", Scope.ADMIN)}
    named = client.get("/v1/audit", headers=admin, params={"on_behalf_of": "dr.jones@example.org"}).json()["entries"]
    assert [(e["key_id"], e["owner"], e["action"], e["status"]) for e in named] == [
        (service.split("_")[1], "team-web", "POST /v1/jobs", 422)
    ]
    by_service = client.get("/v1/audit", headers=admin, params={"key_id": service.split("_")[1]}).json()["entries"]
    assert [e["on_behalf_of"] for e in by_service] == [None, "dr.jones@example.org"]  # newest first
    [attempt] = client.get("/v1/audit", headers=admin, params={"key_id": ordinary.split("_")[1]}).json()["entries"]
    assert attempt["status"] == 403 and attempt["on_behalf_of"] is None  # the refusal is on record, naming the key
    bad_filter = client.get("/v1/audit", headers=admin, params={"on_behalf_of": "a\nb"})
    assert bad_filter.status_code == 422


def test_audit_entries_older_than_the_retention_are_dropped(redis_url: str, redis_prefix: str) -> None:
    from datetime import UTC, datetime

    log = AuditLog(redis.Redis.from_url(redis_url), redis_prefix, timedelta(seconds=1))

    def entry() -> AuditEntry:
        return AuditEntry(time=datetime.now(UTC), key_id="k", owner="o", action="POST /x", resource="/x", status=200)

    log.record(entry())
    time.sleep(1.2)
    log.record(entry())
    assert len(log.query().entries) == 1
