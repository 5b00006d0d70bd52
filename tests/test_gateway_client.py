"""The one gateway client: error bodies of every shape, and the calls against a real gateway process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dermasynth.auth import Scope
from dermasynth.gateway_client import (
    API_KEY_HEADER,
    GatewayClient,
    GatewayError,
    ImageFile,
    error_of,
)
from dermasynth.jobs import JobKind
from tests.conftest import free_port
from tests.services.platform import Platform


def _response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://gateway/v1/x"), **kwargs)  # type: ignore[arg-type]


def test_errors_are_read_in_every_shape_the_gateway_answers() -> None:
    legacy = error_of(_response(422, json={"detail": "dataset 'x' is not published", "reason": "unknown_reference"}))
    assert (legacy.status, legacy.reason, legacy.detail) == (422, "unknown_reference", "dataset 'x' is not published")
    problem = error_of(
        _response(
            409,
            json={"type": "https://dermasynth.dev/problems/not_exportable", "title": "Conflict", "detail": "job x"},
            headers={"content-type": "application/problem+json"},
        )
    )
    assert (problem.reason, problem.detail, problem.body["title"]) == ("not_exportable", "job x", "Conflict")
    fastapi = error_of(_response(401, json={"detail": "missing API key"}))
    assert (fastapi.reason, str(fastapi)) == ("unauthorized", "401 unauthorized: missing API key")
    validation = error_of(
        _response(422, json={"detail": [{"loc": ["body", "params", "dataset_id"], "msg": "Field required"}]})
    )
    assert validation.detail == "params.dataset_id: Field required"
    proxy = error_of(_response(502, text="<html>bad gateway</html>"))
    assert (proxy.reason, proxy.detail) == ("bad_gateway", "<html>bad gateway</html>")


def test_image_files_are_named_and_typed_from_their_path(tmp_path: Path) -> None:
    (tmp_path / "lesion.PNG").write_bytes(b"png bytes")
    image = ImageFile.read(tmp_path / "lesion.PNG")
    assert (image.name, image.data, image.mime_type) == ("lesion.PNG", b"png bytes", "image/png")


def test_no_key_and_no_gateway_are_reported_before_anything_is_sent() -> None:
    with GatewayClient(f"http://127.0.0.1:{free_port()}", "") as client, pytest.raises(GatewayError) as missing:
        client.datasets()
    assert (missing.value.status, missing.value.reason) == (401, "missing_key")
    with GatewayClient(f"http://127.0.0.1:{free_port()}", "a-key") as client, pytest.raises(GatewayError) as down:
        client.jobs()
    assert (down.value.status, down.value.reason) == (0, "unreachable")
    assert "cannot reach the gateway" in down.value.detail


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(redis_url, tmp_path_factory.mktemp("client-platform"))
    try:
        platform.start_gateway()
        platform.start_worker("client", queues="default")  # uploads are imported by ingest jobs
        yield platform
    finally:
        platform.close()


@pytest.mark.integration
def test_calls_and_refusals_against_a_real_gateway(live: Platform) -> None:
    engineer = live.key(Scope.ENGINEER)
    with GatewayClient(live.gateway_url, engineer) as client:
        assert client.http.headers[API_KEY_HEADER] == engineer
        assert client.datasets() == []
        assert client.jobs().total == 0
        with pytest.raises(GatewayError) as unknown:
            client.submit(JobKind.TRAINING, {"dataset_id": "ds-000000000000"})
        assert (unknown.value.status, unknown.value.reason) == (422, "unknown_reference")
        with pytest.raises(GatewayError) as invalid:
            client.submit(JobKind.TRAINING, {"config": {"epochs": 0}})
        assert invalid.value.status == 422 and "dataset_id" in invalid.value.detail
        with pytest.raises(GatewayError) as missing:
            client.job("0" * 32)
        assert (missing.value.status, missing.value.reason) == (404, "not_found")
        ready, checks = client.ready()
        assert isinstance(ready, bool) and checks == {}  # the checks' details are for admin keys only
    with GatewayClient(live.gateway_url, live.key(Scope.CLINICIAN)) as clinician, pytest.raises(GatewayError) as no:
        clinician.datasets()
    assert (no.value.status, no.value.reason) == (403, "forbidden") and "engineer scope" in no.value.detail
    stranger = "dsk_000000000000_" + "a" * 43
    with GatewayClient(live.gateway_url, stranger) as client, pytest.raises(GatewayError) as who:
        client.jobs()
    assert (who.value.status, who.value.reason) == (401, "unauthorized")


@pytest.mark.integration
def test_the_web_apps_calls_key_check_upload_progress_report_and_schemas(live: Platform, tmp_path: Path) -> None:
    from dermasynth.data.archives import write_archive
    from dermasynth.data.demo import make_demo_dataset

    for key, refused in [(live.key(Scope.ENGINEER), 403), ("dsk_000000000000_" + "a" * 43, 401)]:
        with GatewayClient(live.gateway_url, key) as client, pytest.raises(GatewayError) as no:
            client.check_clinician_key()
        assert no.value.status == refused
    service = live.key(Scope.CLINICIAN, Scope.DELEGATE)  # the web app's key, which may act for a person
    with GatewayClient(live.gateway_url, service, on_behalf_of="dr.jones@example.org") as client:
        client.check_clinician_key()  # a clinician key passes, and no model is asked
        assert client.http.headers["X-DermaSynth-On-Behalf-Of"] == "dr.jones@example.org"
    ordinary = live.key(Scope.CLINICIAN)
    with GatewayClient(live.gateway_url, ordinary, on_behalf_of="dr.jones@example.org") as client:
        with pytest.raises(GatewayError) as impersonating:
            client.check_clinician_key()
        assert impersonating.value.status == 403 and impersonating.value.reason == "delegation_refused"
    manifest = make_demo_dataset(tmp_path / "demo", count=35, size=32, seed=3)
    archive = tmp_path / "demo.zip"
    with archive.open("wb") as handle:
        write_archive(manifest.root, handle)
    seen: list[tuple[int, int]] = []
    with GatewayClient(live.gateway_url, live.key(Scope.ENGINEER)) as client:
        with archive.open("rb") as handle:
            info, report = client.upload_archive(
                handle, "demo.zip", "progress", size=archive.stat().st_size, on_progress=lambda *p: seen.append(p)
            )
        assert seen[-1] == (archive.stat().st_size, archive.stat().st_size)
        assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
        assert client.import_report(info.id) == report
        assert "/v1/jobs" in client.openapi()["paths"]
