"""/v1/models through the gateway: versions with lineage, export of a training job, deploy and rollback
under a stream of prediction requests against the session's real tritonserver."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from dermasynth.auth import Scope
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs import JobKind, JobRecord, JobState, RedisJobStore, run_prefix
from tests.services.gateway.serving import ServingPlatform, serving_platform
from tests.services.platform import wait_until
from tests.triton_fixtures import Served, copy_version

ROLLOUT = "rollout"


@pytest.fixture(scope="module")
def platform(served: Served, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingPlatform]:
    with serving_platform(served, redis_url, tmp_path_factory.mktemp("gw")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def client(platform: ServingPlatform) -> Iterator[TestClient]:
    with platform.in_process() as test_client:
        yield test_client


@pytest.fixture(scope="module")
def engineer(platform: ServingPlatform) -> dict[str, str]:
    return platform.headers(Scope.ENGINEER, Scope.DEPLOYER)


def test_versions_lineage_and_the_live_version(served: Served, client: TestClient, engineer: dict[str, str]) -> None:
    listed = client.get("/v1/models", headers=engineer)
    assert listed.status_code == 200
    assert {"name": served.name, "version": 1} in [{"name": m["name"], "version": m["version"]} for m in listed.json()]
    detail = client.get(f"/v1/models/{served.name}", headers=engineer).json()
    assert detail["live"]["version"] == 1 and detail["live"]["history"][0]["action"] == "deploy"
    first = detail["versions"][0]
    assert first["live"] and first["lineage"] == {
        "run": "runs/test",
        "dataset": "demo",
        "job_id": None,
        "export_job_id": None,
        "metrics": {},
    }
    assert first["architecture"] == "resnet18" and first["image_size"] == served.run.trained.preprocessing.image_size
    assert client.get(f"/v1/models/{served.name}/versions/1", headers=engineer).json()["version"] == 1
    assert client.get(f"/v1/models/{served.name}/versions/99", headers=engineer).status_code == 404
    assert client.get("/v1/models/nothing", headers=engineer).status_code == 404


def test_engineer_scope_is_required(client: TestClient, platform: ServingPlatform) -> None:
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=platform.headers(Scope.CLINICIAN)).status_code == 403
    assert (
        client.post(
            "/v1/models/classifier/deploy", json={"version": 1}, headers=platform.headers(Scope.CLINICIAN)
        ).status_code
        == 403
    )


def test_unknown_versions_and_empty_rollbacks_are_404(
    served: Served, client: TestClient, engineer: dict[str, str]
) -> None:
    missing = client.post(f"/v1/models/{served.name}/deploy", json={"version": 42}, headers=engineer)
    assert missing.status_code == 404 and "registered versions" in missing.json()["detail"]
    name = f"fresh-{uuid.uuid4().hex[:6]}"
    copy_version(served, name)
    nothing = client.post(f"/v1/models/{name}/rollback", json={}, headers=engineer)
    assert nothing.status_code == 404 and "no earlier live version" in nothing.json()["detail"]


def test_export_a_finished_training_job(
    served: Served, platform: ServingPlatform, client: TestClient, engineer: dict[str, str], tmp_path: Path
) -> None:
    settings = platform.settings
    dataset = DatasetCatalog(served.store, tmp_path / "cache").push(served.run.manifest.root, name="demo")
    jobs = RedisJobStore.from_url(settings.redis_url, settings.job_key_prefix)
    job = jobs.create(
        JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={"dataset_id": dataset.id})
    )
    for key in served.run.store.list():  # what the training worker would have written
        served.store.put_bytes(f"{run_prefix(job.id)}/{key}", served.run.store.get_bytes(key))

    early = client.post("/v1/models", json={"training_job_id": job.id, "name": "exported"}, headers=engineer)
    assert early.status_code == 409 and "queued" in early.json()["detail"]
    jobs.transition(job.id, JobState.RUNNING)
    jobs.transition(job.id, JobState.SUCCEEDED)
    accepted = client.post("/v1/models", json={"training_job_id": job.id, "name": "exported"}, headers=engineer)
    assert accepted.status_code == 202, accepted.text  # at once: the export runs on a worker
    export_id = accepted.json()["job_id"]
    assert accepted.headers["location"] == f"/v1/jobs/{export_id}"
    queued = jobs.get(export_id)
    assert queued.kind == JobKind.EXPORT and queued.queue == "default" and queued.state == JobState.QUEUED
    assert client.get("/v1/models/exported", headers=engineer).status_code == 404  # nothing registered yet

    worker = platform.start_worker("export", queues="default")
    try:
        wait_until(lambda: jobs.get(export_id).terminal, 240, "the export job to finish")
    finally:
        platform.stop(worker)
    done = jobs.get(export_id)
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.result is not None and done.result["version"] == 1
    info = client.get("/v1/models/exported/versions/1", headers=engineer).json()
    assert not info["live"] and info["temperature"] > 0 and info["set_coverage"] == 0.9
    assert info["lineage"]["job_id"] == job.id and info["lineage"]["dataset"] == dataset.id
    assert info["lineage"]["export_job_id"] == export_id
    assert info["lineage"]["run"] == run_prefix(job.id) and "balanced_accuracy" in str(info["lineage"]["metrics"])
    assert served.store.exists("models/exported/1/model.onnx")
    absent = client.post("/v1/models", json={"training_job_id": uuid.uuid4().hex}, headers=engineer)
    assert absent.status_code == 404


def test_deploy_and_rollback_under_a_stream_of_requests(
    served: Served, platform: ServingPlatform, engineer: dict[str, str]
) -> None:
    """Clinicians keep sending images while an engineer deploys version 2 and rolls back: nothing fails."""
    first, second = copy_version(served, ROLLOUT), copy_version(served, ROLLOUT)
    served.deploy(ROLLOUT, first)
    gateway = platform.start_gateway()
    clinician = platform.headers(Scope.CLINICIAN)
    record = served.run.manifest.in_split("val")[0]
    files = [("images", ("lesion.png", served.run.manifest.path_of(record).read_bytes(), "image/png"))]
    statuses: Counter[int] = Counter()
    versions: Counter[int] = Counter()

    async def stream(http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply = await http.post("/v1/predictions", params={"model": ROLLOUT}, files=files, headers=clinician)
            statuses[reply.status_code] += 1
            if reply.status_code == 200:
                versions[reply.json()["model_version"]] += 1

    async def go() -> tuple[dict, dict]:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=gateway, timeout=120) as http:
            streams = [asyncio.create_task(stream(http, stop)) for _ in range(4)]
            await asyncio.sleep(1.0)
            deployed = await http.post(f"/v1/models/{ROLLOUT}/deploy", json={"version": second}, headers=engineer)
            await asyncio.sleep(2.0)
            rolled = await http.post(f"/v1/models/{ROLLOUT}/rollback", json={}, headers=engineer)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*streams)
        return deployed.json(), rolled.json()

    deployed, rolled = asyncio.run(go())
    assert deployed["version"] == second and rolled["version"] == first
    assert [h["action"] for h in rolled["history"]] == ["deploy", "deploy", "rollback"]
    assert set(statuses) == {200}, statuses
    assert versions[first] > 0 and versions[second] > 0, versions
