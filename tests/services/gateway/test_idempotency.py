"""``Idempotency-Key`` on POST /v1/jobs and POST /v1/datasets: a retry gets the first answer back and
queues no second job; the key is bound to its request body; failures are not remembered."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from fastapi.testclient import TestClient

from dermasynth.data.manifest import Manifest
from dermasynth.jobs.queues import broker_key_prefix
from tests.data.zips import zip_folder
from tests.services.gateway.test_problems import assert_problem
from tests.services.platform import Platform


def _train(dataset_id: str, epochs: int = 1) -> dict[str, Any]:
    return {"kind": "training", "params": {"dataset_id": dataset_id, "config": {"epochs": epochs}}}


def test_a_retried_job_submission_returns_the_first_job_and_queues_nothing(
    client: TestClient, engineer: dict[str, str], dataset_id: str, shared_platform: Platform
) -> None:
    broker = redis.Redis.from_url(shared_platform.redis_url)
    queue = f"{broker_key_prefix(shared_platform.settings)}train"
    waiting = broker.llen(queue)
    headers = {**engineer, "Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/jobs", headers=headers, json=_train(dataset_id))
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    retried = client.post("/v1/jobs", headers=headers, json=_train(dataset_id))
    assert retried.status_code == 202 and retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first.json() and retried.headers["location"] == first.headers["location"]
    assert broker.llen(queue) == waiting + 1  # one message: one GPU job

    reused = client.post("/v1/jobs", headers=headers, json=_train(dataset_id, epochs=2))
    assert "another request body" in assert_problem(reused, 422, "idempotency_key_reused")["detail"]
    fresh = client.post("/v1/jobs", headers={**engineer, "Idempotency-Key": str(uuid.uuid4())}, json=_train(dataset_id))
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]
    plain = [client.post("/v1/jobs", headers=engineer, json=_train(dataset_id)).json()["id"] for _ in range(2)]
    assert plain[0] != plain[1]  # without a key, two requests are two jobs
    assert broker.llen(queue) == waiting + 4


def test_keys_belong_to_their_api_key_and_failures_are_not_remembered(
    client: TestClient, engineer: dict[str, str], dataset_id: str, shared_platform: Platform
) -> None:
    from dermasynth.auth import Scope

    key = str(uuid.uuid4())
    mine = client.post("/v1/jobs", headers={**engineer, "Idempotency-Key": key}, json=_train(dataset_id))
    other = {"Authorization": f"Bearer {shared_platform.key(Scope.ENGINEER)}", "Idempotency-Key": key}
    theirs = client.post("/v1/jobs", headers=other, json=_train(dataset_id))
    assert theirs.status_code == 202 and theirs.json()["id"] != mine.json()["id"]

    retry_key = {**engineer, "Idempotency-Key": str(uuid.uuid4())}
    missing = {"kind": "training", "params": {"dataset_id": "ds-not-yet"}}
    assert_problem(client.post("/v1/jobs", headers=retry_key, json=missing), 422, "unknown_reference")
    assert_problem(client.post("/v1/jobs", headers=retry_key, json=missing), 422, "unknown_reference")  # ran again
    bad = {**engineer, "Idempotency-Key": "not a valid key!"}
    assert_problem(client.post("/v1/jobs", headers=bad, json=_train(dataset_id)), 422, "invalid_idempotency_key")


def test_a_retried_upload_returns_the_first_job(
    client: TestClient, engineer: dict[str, str], demo_dataset: Manifest
) -> None:
    archive = zip_folder(demo_dataset.root, wrap="demo")
    headers = {**engineer, "Idempotency-Key": str(uuid.uuid4())}
    before = client.get("/v1/jobs?kind=ingest", headers=engineer).json()["total"]

    def upload(name: str) -> Any:
        files = {"file": ("demo.zip", archive, "application/zip")}
        return client.post("/v1/datasets", headers=headers, data={"name": name}, files=files)

    first, retried = upload("idem"), upload("idem")
    assert first.status_code == retried.status_code == 202 and retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first.json() and retried.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    assert client.get("/v1/jobs?kind=ingest", headers=engineer).json()["total"] == before + 1  # queued once
    assert_problem(upload("another name"), 422, "idempotency_key_reused")


def test_a_retry_while_the_first_request_still_runs_is_told_to_wait(
    client: TestClient, engineer: dict[str, str], dataset_id: str, shared_platform: Platform
) -> None:
    key, body = str(uuid.uuid4()), _train(dataset_id)
    key_id = engineer["Authorization"].split("_")[1]  # dsk_<id>_<secret>
    first = client.post("/v1/jobs", headers={**engineer, "Idempotency-Key": key}, json=body)
    stored = f"{shared_platform.prefix}:idempotency:{key_id}:jobs:{key}"
    client_redis = redis.Redis.from_url(shared_platform.redis_url)
    answer = client_redis.get(stored)
    assert answer is not None and first.json()["id"] in answer.decode()
    pending = answer.decode().replace('"state": "done"', '"state": "pending"')  # as while the first one runs
    client_redis.set(stored, pending)
    busy = client.post("/v1/jobs", headers={**engineer, "Idempotency-Key": key}, json=body)
    assert_problem(busy, 409, "idempotency_in_progress")
    assert busy.headers["retry-after"]  # the client is told when to retry
