"""Issue 12, findings 1 and 2: owners across every endpoint, with two owners and an admin.

Team A owns a dataset, a job and a model. Team B (engineer and deployer) gets 404 for each of them on
every endpoint, never sees them in lists, cannot name them in a job and cannot register from another
owner's prefix; an admin key sees and reaches everything. Changing the live model needs the deployer scope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.data.manifest import Manifest
from dermasynth.serving.schemas import ModelLineage, ModelVersionInfo
from dermasynth.storage import open_store
from tests.data.samples import jpeg
from tests.data.zips import zip_folder
from tests.services.gateway.conftest import publish_zip
from tests.services.platform import PEPPER, Platform

MODEL = "team-a-model"
UNCHECKED_TAGS = {"health", "predictions", "audit"}  # open, clinical (not owned), admin-only


def _headers(platform: Platform, owner: str, *scopes: Scope) -> dict[str, str]:
    keys = RedisApiKeyStore(redis.Redis.from_url(platform.redis_url), PEPPER, platform.prefix)
    return {"X-API-Key": keys.create(f"{owner} key", list(scopes), owner).token}


@pytest.fixture(scope="module")
def world(client: TestClient, shared_platform: Platform, demo_dataset: Manifest) -> dict[str, Any]:
    a = _headers(shared_platform, "team-a", Scope.ENGINEER)
    world: dict[str, Any] = {
        "a": a,
        "a_deployer": _headers(shared_platform, "team-a", Scope.ENGINEER, Scope.DEPLOYER),
        "b": _headers(shared_platform, "team-b", Scope.ENGINEER, Scope.DEPLOYER),
        "admin": _headers(shared_platform, "ops", Scope.ADMIN),
    }
    archive = zip_folder(demo_dataset.root, wrap="d")
    world["dataset"] = publish_zip(shared_platform, archive, "team a data", owner="team-a")
    assert client.get(f"/v1/datasets/{world['dataset']}", headers=a).json()["owner"] == "team-a"
    job = client.post(
        "/v1/jobs", headers=a, json={"kind": "training", "params": {"dataset_id": world["dataset"]}}
    ).json()
    assert job["owner"] == "team-a" and job["key_id"]
    world["job"] = job["id"]
    store = open_store(shared_platform.settings)
    store.put_bytes(f"runs/{job['id']}/metrics.json", b"{}")
    version = ModelVersionInfo(
        name=MODEL,
        version=1,
        created_at=datetime.now(UTC),
        architecture="resnet18",
        classes=["mel", "nv"],
        image_size=32,
        min_probability=0.5,
        ood_threshold=1.0,
        lineage=ModelLineage(job_id=job["id"]),
        owner="team-a",
    )  # the registry's record of a version of team A (no Triton needed for the ownership checks)
    store.put_bytes(f"registry/{MODEL}/versions/1.json", version.model_dump_json().encode())
    for label in ("mel", "nv"):
        for i in range(3):
            store.put_bytes(f"incoming/team-a/batch/{label}/{i}.jpg", jpeg((40 * i, 90, 60)))
    return world


def _routes(world: dict[str, Any]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Every owned operation, with a concrete path on team A's resources and its request options."""
    job, dataset = world["job"], world["dataset"]
    return {
        ("GET", "/v1/datasets/{dataset_id}"): (f"/v1/datasets/{dataset}", {}),
        ("GET", "/v1/datasets/{dataset_id}/report"): (f"/v1/datasets/{dataset}/report", {}),
        ("GET", "/v1/jobs/{job_id}"): (f"/v1/jobs/{job}", {}),
        ("GET", "/v1/jobs/{job_id}/logs"): (f"/v1/jobs/{job}/logs", {}),
        ("GET", "/v1/jobs/{job_id}/artefacts"): (f"/v1/jobs/{job}/artefacts", {}),
        ("GET", "/v1/jobs/{job_id}/artefacts/{path}"): (f"/v1/jobs/{job}/artefacts/metrics.json", {}),
        ("GET", "/v1/models/{name}"): (f"/v1/models/{MODEL}", {}),
        ("GET", "/v1/models/{name}/versions/{version}"): (f"/v1/models/{MODEL}/versions/1", {}),
        ("POST", "/v1/models/{name}/deploy"): (f"/v1/models/{MODEL}/deploy", {"json": {"version": 1}}),
        ("POST", "/v1/models/{name}/rollback"): (f"/v1/models/{MODEL}/rollback", {"json": {}}),
        ("POST", "/v1/models"): ("/v1/models", {"json": {"training_job_id": job, "name": "b-model"}}),
        ("POST", "/v1/jobs/{job_id}/cancel"): (f"/v1/jobs/{job}/cancel", {}),  # last: it changes the job
    }


LISTS = {("GET", "/v1/datasets"), ("GET", "/v1/jobs"), ("GET", "/v1/models")}
CREATES = {("POST", "/v1/datasets"), ("POST", "/v1/datasets/register"), ("POST", "/v1/jobs")}


def test_every_owned_operation_is_checked(app: FastAPI, world: dict[str, Any]) -> None:
    operations = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if not UNCHECKED_TAGS & set(operation.get("tags", []))
    }
    assert operations == set(_routes(world)) | LISTS | CREATES


def test_another_owner_gets_404_everywhere(client: TestClient, world: dict[str, Any]) -> None:
    for (method, template), (path, options) in _routes(world).items():
        response = client.request(method, path, headers=world["b"], **options)
        assert response.status_code == 404, (method, template, response.text)
        assert world["job"] not in response.text or "no job" in response.text


def test_lists_show_only_the_owners_resources(client: TestClient, world: dict[str, Any]) -> None:
    for who, sees in (("b", False), ("a", True), ("admin", True)):
        datasets = [d["id"] for d in client.get("/v1/datasets", headers=world[who]).json()]
        jobs = [j["id"] for j in client.get("/v1/jobs", headers=world[who]).json()["jobs"]]
        models = [m["name"] for m in client.get("/v1/models", headers=world[who]).json()]
        assert (world["dataset"] in datasets, world["job"] in jobs, MODEL in models) == (sees, sees, sees), who
    page = client.get("/v1/jobs", headers=world["b"]).json()
    assert all(job["owner"] == "team-b" for job in page["jobs"])


def test_another_owner_cannot_name_the_resources_in_new_work(client: TestClient, world: dict[str, Any]) -> None:
    uses_dataset = client.post(
        "/v1/jobs", headers=world["b"], json={"kind": "training", "params": {"dataset_id": world["dataset"]}}
    )
    assert uses_dataset.status_code == 422 and uses_dataset.json()["reason"] == "unknown_reference"
    uses_job = client.post(
        "/v1/jobs", headers=world["b"], json={"kind": "evaluation", "params": {"training_job_id": world["job"]}}
    )
    assert uses_job.status_code == 422 and "no such job" in uses_job.json()["detail"]


@pytest.mark.parametrize(
    "prefix",
    ["incoming/team-a/batch", "predictions", "models", "runs", "catalog/datasets", "datasets", "incoming/team-b"],
)
def test_register_reads_only_the_owners_incoming_prefix(client: TestClient, world: dict[str, Any], prefix: str) -> None:
    response = client.post("/v1/datasets/register", headers=world["b"], json={"prefix": prefix, "name": "x"})
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "forbidden_prefix" and "incoming/team-b/" in response.json()["detail"]


def test_the_owner_registers_from_its_incoming_prefix(client: TestClient, world: dict[str, Any]) -> None:
    response = client.post(
        "/v1/datasets/register", headers=world["a"], json={"prefix": "incoming/team-a/batch", "name": "batch"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "ingest" and response.json()["owner"] == "team-a"


def test_the_live_model_needs_the_deployer_scope(client: TestClient, world: dict[str, Any]) -> None:
    for action, body in (("deploy", {"version": 1}), ("rollback", {})):
        response = client.post(f"/v1/models/{MODEL}/{action}", headers=world["a"], json=body)
        assert response.status_code == 403 and "deployer scope" in response.json()["detail"]
        allowed = client.post(f"/v1/models/{MODEL}/{action}", headers=world["a_deployer"], json=body)
        # past the scope and owner checks: what fails now is the deploy itself (no model files, no Triton)
        assert allowed.status_code != 403 and "is registered" not in allowed.text, allowed.text


def test_an_admin_reaches_every_owners_resources(client: TestClient, world: dict[str, Any]) -> None:
    for (method, template), (path, options) in _routes(world).items():
        if method != "GET":
            continue
        response = client.request(method, path, headers=world["admin"], **options)
        assert response.status_code == 200, (template, response.text)
    cancelled = client.post(f"/v1/jobs/{world['job']}/cancel", headers=world["admin"])
    assert cancelled.status_code in (202, 409), cancelled.text


def test_quotas_on_active_jobs_and_stored_bytes(shared_platform: Platform, demo_dataset: Manifest) -> None:
    from services.gateway.app import create_app
    from services.gateway.services import Services

    archive = zip_folder(demo_dataset.root, wrap="d")
    settings = shared_platform.settings.model_copy(
        update={"max_active_jobs_per_owner": 1, "max_stored_bytes_per_owner": len(archive) + 1000}
    )
    services = Services.from_settings(settings)
    headers = _headers(shared_platform, "team-quota", Scope.ENGINEER)
    try:
        with TestClient(create_app(services=services)) as client:
            first = client.post("/v1/datasets", headers=headers, data={"name": "q"}, files={"file": ("d.zip", archive)})
            assert first.status_code == 202, first.text  # nothing stored yet: within the quota
            uploads = open_store(settings).list("incoming/team-quota/uploads/")
            assert uploads == [f"incoming/team-quota/uploads/{first.json()['id']}.zip"]
            busy = client.post("/v1/datasets", headers=headers, data={"name": "q1"}, files={"file": ("d.zip", archive)})
            assert busy.status_code == 429 and "DERMASYNTH_MAX_ACTIVE_JOBS_PER_OWNER" in busy.json()["detail"]
            assert open_store(settings).list("incoming/team-quota/uploads/") == uploads  # refused before storing
            client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=headers)  # no worker here: import it below
            assert open_store(settings).list("incoming/team-quota/uploads/") == []  # a cancelled upload's zip goes
            dataset = client.get(
                f"/v1/datasets/{publish_zip(shared_platform, archive, 'q', owner='team-quota')}", headers=headers
            ).json()
            assert dataset["bytes"] > 1000
            second = client.post(
                "/v1/datasets", headers=headers, data={"name": "q2"}, files={"file": ("d.zip", archive)}
            )
            assert second.status_code == 429 and second.json()["reason"] == "quota_exceeded"
            assert "DERMASYNTH_MAX_STORED_BYTES_PER_OWNER" in second.json()["detail"]
            job = {"kind": "training", "params": {"dataset_id": dataset["id"]}}
            assert client.post("/v1/jobs", headers=headers, json=job).status_code == 202
            over = client.post("/v1/jobs", headers=headers, json=job)
            assert over.status_code == 429 and "DERMASYNTH_MAX_ACTIVE_JOBS_PER_OWNER" in over.json()["detail"]
            other_team = _headers(shared_platform, "team-other", Scope.ENGINEER)
            listed = client.get("/v1/jobs", headers=headers).json()["jobs"]
            client.post(f"/v1/jobs/{listed[0]['id']}/cancel", headers=headers)
            assert client.post("/v1/jobs", headers=headers, json=job).status_code == 202  # a slot came free
            assert client.get("/v1/jobs", headers=other_team).json()["total"] == 0
    finally:
        services.close()
