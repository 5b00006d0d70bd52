"""Dataset uploads and registrations over the API: the gateway checks what needs no import and answers
202 with an ``ingest`` job; a real Celery worker (one for the module) imports the dataset. Good uploads
become datasets with a report; bad ones are refused at once (4xx) or end their job failed with the reason;
nothing is left behind either way."""

from __future__ import annotations

import io
import uuid
import warnings
import zipfile
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore
from services.gateway.app import create_app
from services.gateway.services import Services
from tests.data.samples import jpeg
from tests.data.zips import BAD_UPLOADS, JOB_REFUSALS, imagefolder_zip, undecodable_zip, zip_folder, zip_members
from tests.services.platform import PEPPER, Platform, wait_until

pytestmark = pytest.mark.integration

FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module", autouse=True)
def worker(shared_platform: Platform) -> None:
    shared_platform.start_worker("ingest", queues="default")


def _upload(client: TestClient, headers: dict[str, str], data: bytes, name: str = "t", **form: str) -> httpx.Response:
    return client.post(
        "/v1/datasets",
        headers=headers,
        data={"name": name, **form},
        files={"file": ("upload.zip", data, "application/zip")},
    )


def _wait(client: TestClient, headers: dict[str, str], job_id: str, timeout: float = 120) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def final() -> bool:
        seen.update(client.get(f"/v1/jobs/{job_id}", headers=headers).json())
        return seen["state"] in FINAL

    wait_until(final, timeout, f"ingest job {job_id} to finish", interval=0.2)
    return seen


def _accepted(response: httpx.Response) -> str:
    """The ingest job id of a 202 answer (checking its shape and Location)."""
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "ingest" and job["queue"] == "default" and job["state"] in {"queued", "running"}
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    return str(job["id"])


def _store(platform: Platform) -> FilesystemStore:
    return FilesystemStore(platform.root / "store")


def _uploads_left(platform: Platform, owner: str = "default") -> list[str]:
    return _store(platform).list(f"incoming/{owner}/uploads/")


def test_an_upload_is_a_job_whose_dataset_and_report_are_readable(
    client: TestClient, engineer: dict[str, str], demo_dataset: Manifest, shared_platform: Platform
) -> None:
    job_id = _accepted(_upload(client, engineer, zip_folder(demo_dataset.root, wrap="demo"), name="demo"))
    job = _wait(client, engineer, job_id)
    assert job["state"] == "succeeded", job
    dataset_id = job["result"]["dataset_id"]
    assert dataset_id == f"ds-{job_id}" and job["result"]["report_url"] == f"/v1/datasets/{dataset_id}/report"
    assert job["result"]["accepted"] == len(demo_dataset) and job["result"]["rejected"] == 0
    assert dataset_id in [d["id"] for d in client.get("/v1/datasets", headers=engineer).json()]
    info = client.get(f"/v1/datasets/{dataset_id}", headers=engineer).json()
    assert info["stats"]["classes"] == demo_dataset.class_counts() and info["format"] == "manifest"
    assert info["origin"] == "upload" and info["job_id"] == job_id
    report = client.get(f"/v1/datasets/{dataset_id}/report", headers=engineer).json()
    assert report["files_seen"] == report["accepted"] == len(demo_dataset)
    assert _uploads_left(shared_platform) == []  # the uploaded zip is gone once imported


def test_a_partly_bad_upload_reports_each_rejected_file(client: TestClient, engineer: dict[str, str]) -> None:
    members = {f"nv/ok_{i}.jpg": jpeg() for i in range(4)} | {"mel/ok.jpg": jpeg(), "mel/broken.jpg": jpeg()[:300]}
    job = _wait(client, engineer, _accepted(_upload(client, engineer, zip_members(members), format="imagefolder")))
    assert job["state"] == "succeeded", job
    assert job["result"]["accepted"] == 5 and job["result"]["rejected_by_reason"] == {"truncated": 1}
    report = client.get(job["result"]["report_url"], headers=engineer).json()
    assert report["rejections"] == [
        {"file": "mel/broken.jpg", "reason": "truncated", "detail": report["rejections"][0]["detail"]}
    ]


@pytest.mark.parametrize("name", sorted(set(BAD_UPLOADS) - JOB_REFUSALS))
def test_bad_zips_are_refused_at_once_with_a_reason(
    client: TestClient, engineer: dict[str, str], name: str, shared_platform: Platform
) -> None:
    data, reason = BAD_UPLOADS[name]
    jobs_before = client.get("/v1/jobs?kind=ingest", headers=engineer).json()["total"]
    before = _store(shared_platform).list("")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        response = _upload(client, engineer, data)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["reason"] == reason and response.json()["detail"]
    assert _store(shared_platform).list("") == before  # nothing stored, no job queued
    assert client.get("/v1/jobs?kind=ingest", headers=engineer).json()["total"] == jobs_before


@pytest.mark.parametrize("name", sorted(JOB_REFUSALS))
def test_zips_bad_inside_end_their_job_failed_with_the_reason(
    client: TestClient, engineer: dict[str, str], name: str, shared_platform: Platform
) -> None:
    data, reason = BAD_UPLOADS[name]
    catalog = _store(shared_platform).list("catalog/")
    job = _wait(client, engineer, _accepted(_upload(client, engineer, data)))
    assert job["state"] == "failed" and job["error"].startswith("ArchiveRejected: "), job
    expected = {"corrupt_member": "cannot be extracted", "unsafe_path": "points outside"}[reason]
    assert expected in job["error"]
    assert _store(shared_platform).list("catalog/") == catalog
    assert _uploads_left(shared_platform) == []  # deleted after the failure too


def test_undecodable_images_and_wrong_layouts_fail_the_job(
    client: TestClient, engineer: dict[str, str], shared_platform: Platform
) -> None:
    job = _wait(client, engineer, _accepted(_upload(client, engineer, undecodable_zip())))
    assert job["state"] == "failed" and job["error"].startswith("NothingAccepted: no image"), job
    report = client.get(f"/v1/jobs/{job['id']}/artefacts/import_report.json", headers=engineer).json()
    assert {r["reason"] for r in report["rejections"]} >= {"truncated", "grayscale", "empty"}
    job = _wait(
        client,
        engineer,
        _accepted(_upload(client, engineer, zip_members({"notes/readme.txt": b"hello"}), format="ham10000")),
    )
    assert job["state"] == "failed" and job["error"].startswith("FormatError"), job
    assert "HAM10000_metadata.csv" in job["error"]
    assert _uploads_left(shared_platform) == []


@pytest.mark.parametrize(
    "form",
    [{"val_frac": "0.5", "test_frac": "0.5"}, {"format": "coco"}, {"seed": "-1"}, {"name": ""}, {"val_frac": "abc"}],
)
def test_bad_upload_options(client: TestClient, engineer: dict[str, str], form: dict[str, str]) -> None:
    response = client.post(
        "/v1/datasets",
        headers=engineer,
        data={"name": "t", **form},
        files={"file": ("upload.zip", imagefolder_zip(), "application/zip")},
    )
    assert response.status_code == 422, response.text


def test_missing_file_field(client: TestClient, engineer: dict[str, str]) -> None:
    response = client.post("/v1/datasets", headers=engineer, data={"name": "x"})
    assert response.status_code == 422


def test_request_size_limit(shared_platform: Platform, engineer: dict[str, str]) -> None:
    services = Services.from_settings(shared_platform.settings.model_copy(update={"max_upload_bytes": 20_000}))
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as small:
            big = imagefolder_zip(n_per_class=20)
            assert len(big) > 20_000
            response = _upload(small, engineer, big)
            assert response.status_code == 413, response.text
    finally:
        services.close()


def test_a_retried_upload_with_its_idempotency_key_returns_the_same_job(
    client: TestClient, engineer: dict[str, str], shared_platform: Platform
) -> None:
    headers = {**engineer, "Idempotency-Key": uuid.uuid4().hex}
    archive = imagefolder_zip()
    first, retried = _upload(client, headers, archive, name="once"), _upload(client, headers, archive, name="once")
    assert _accepted(first) == retried.json()["id"] and retried.headers["idempotent-replayed"] == "true"
    assert retried.status_code == 202 and retried.headers["location"] == first.headers["location"]
    job = _wait(client, engineer, first.json()["id"])
    assert job["state"] == "succeeded", job
    named = [d for d in client.get("/v1/datasets", headers=engineer).json() if d["name"] == "once"]
    assert [d["id"] for d in named] == [job["result"]["dataset_id"]]


def test_register_a_prefix_in_the_store(
    client: TestClient, engineer: dict[str, str], shared_platform: Platform
) -> None:
    store = _store(shared_platform)
    for label in ("akiec", "vasc"):
        for i in range(4):
            store.put_bytes(f"incoming/default/batch7/{label}/img_{i}.jpg", jpeg((20 * i, 80, 120)))
    response = client.post(
        "/v1/datasets/register", headers=engineer, json={"prefix": "incoming/default/batch7", "name": "batch 7"}
    )
    job = _wait(client, engineer, _accepted(response))
    assert job["state"] == "succeeded", job
    info = client.get(f"/v1/datasets/{job['result']['dataset_id']}", headers=engineer).json()
    assert info["origin"] == "store" and info["stats"]["classes"] == {"akiec": 4, "vasc": 4}
    assert len(store.list("incoming/default/batch7/")) == 8  # a registered folder is the owner's: kept
    for body, reason in (
        ({"prefix": "incoming/default/nothing", "name": "x"}, "empty_prefix"),
        ({"prefix": "../etc", "name": "x"}, "invalid_path"),
    ):
        response = client.post("/v1/datasets/register", headers=engineer, json=body)
        assert response.status_code == 422 and response.json()["reason"] == reason, response.text


def test_another_owners_prefix_is_refused_at_once(
    client: TestClient, engineer: dict[str, str], shared_platform: Platform
) -> None:
    keys = RedisApiKeyStore(redis.Redis.from_url(shared_platform.redis_url), PEPPER, shared_platform.prefix)
    other = {"X-API-Key": keys.create("other team", [Scope.ENGINEER], owner="team-b").token}
    _store(shared_platform).put_bytes("incoming/default/mine/nv/a.jpg", jpeg())
    jobs_before = client.get("/v1/jobs?kind=ingest", headers=other).json()["total"]
    response = client.post(
        "/v1/datasets/register", headers=other, json={"prefix": "incoming/default/mine", "name": "theirs"}
    )
    assert response.status_code == 403 and response.json()["reason"] == "forbidden_prefix", response.text
    assert client.get("/v1/jobs?kind=ingest", headers=other).json()["total"] == jobs_before


def _large_zip(images: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(images):
            colour = (i % 250, 20 + 30 * (i // 250), 140)
            archive.writestr(f"{('nv', 'mel', 'bkl')[i % 3]}/img_{i}.jpg", jpeg(colour, size=(256, 256)))
    return buffer.getvalue()


def test_the_gateway_answers_other_requests_while_a_large_import_runs(
    client: TestClient, engineer: dict[str, str]
) -> None:
    """The import runs in the worker: while the job is running, the gateway answers the job's own status,
    the dataset list and a second upload (which queues behind it on the one worker). The import of 4000
    images takes about 6 s on 2 busy cores; the requests below take well under one."""
    first = _accepted(_upload(client, engineer, _large_zip(4000), name="large", format="imagefolder"))
    wait_until(
        lambda: (
            (client.get(f"/v1/jobs/{first}", headers=engineer).json().get("progress") or {}).get("phase") == "ingest"
        ),
        60,
        "the large import to start",
        interval=0.05,
    )
    answered = [
        client.get("/v1/datasets", headers=engineer).status_code,
        client.get(f"/v1/jobs/{first}", headers=engineer).status_code,
    ]
    second = _upload(client, engineer, imagefolder_zip(), name="while busy")
    running = client.get(f"/v1/jobs/{first}", headers=engineer).json()
    assert answered == [200, 200] and second.status_code == 202, second.text
    assert running["state"] == "running" and running["progress"]["phase"] == "ingest", running
    assert client.get(f"/v1/jobs/{second.json()['id']}", headers=engineer).json()["state"] == "queued"
    assert _wait(client, engineer, first, timeout=300)["state"] == "succeeded"
    assert _wait(client, engineer, second.json()["id"])["state"] == "succeeded"
