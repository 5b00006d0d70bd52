"""The jobs API without workers: submission returns 202 at once, bad parameters get 422, never 5xx."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from dermasynth.jobs.queues import broker_key_prefix
from dermasynth.storage import FilesystemStore
from services.gateway.app import create_app
from services.gateway.routers import jobs as jobs_router
from services.gateway.services import Services
from tests.services.platform import Platform

TINY = {"model": "mobilenet_v3_small", "image_size": 16, "epochs": 1, "batch_size": 16, "num_workers": 0}


def _submit(client: TestClient, headers: dict[str, str], body: Any) -> httpx.Response:
    return client.post("/v1/jobs", headers=headers, json=body)


def test_submit_returns_202_with_a_queued_job_and_a_message_on_its_queue(
    client: TestClient, engineer: dict[str, str], admin: dict[str, str], dataset_id: str, shared_platform: Platform
) -> None:
    broker = redis.Redis.from_url(shared_platform.redis_url)
    queue = f"{broker_key_prefix(shared_platform.settings)}train"
    waiting = broker.llen(queue)
    started = time.perf_counter()
    response = _submit(client, engineer, {"kind": "training", "params": {"dataset_id": dataset_id, "config": TINY}})
    assert response.status_code == 202, response.text
    assert time.perf_counter() - started < 5
    job = response.json()
    assert job["state"] == "queued" and job["queue"] == "train" and job["attempts"] == 0
    assert job["params"]["config"]["model"] == "mobilenet_v3_small" and job["params"]["evaluate_split"] == "test"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert broker.llen(queue) == waiting + 1
    assert client.get(f"/v1/jobs/{job['id']}", headers=engineer).json()["state"] == "queued"
    listed = client.get("/v1/jobs", headers=engineer, params={"kind": "training", "state": "queued"}).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    assert 'dermasynth_queue_length{queue="train"}' in client.get("/metrics", headers=admin).text
    assert 'dermasynth_jobs_submitted_total{kind="training"}' in client.get("/metrics", headers=admin).text


def test_cancel_a_queued_job_then_refuse_a_second_cancel(
    client: TestClient, engineer: dict[str, str], dataset_id: str
) -> None:
    job = _submit(client, engineer, {"kind": "training", "params": {"dataset_id": dataset_id}}).json()
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=engineer)
    assert response.status_code == 202 and response.json()["state"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=engineer)
    assert again.status_code == 409 and again.json()["reason"] == "invalid_transition"
    assert "cancelled" in again.json()["detail"]


def test_logs_artefacts_and_unknown_jobs(client: TestClient, engineer: dict[str, str], dataset_id: str) -> None:
    job = _submit(client, engineer, {"kind": "training", "params": {"dataset_id": dataset_id}}).json()
    assert client.get(f"/v1/jobs/{job['id']}/logs", headers=engineer).json() == {"start": 0, "next": 0, "lines": []}
    assert client.get(f"/v1/jobs/{job['id']}/artefacts", headers=engineer).json() == []
    missing = client.get(f"/v1/jobs/{job['id']}/artefacts/metrics.json", headers=engineer)
    assert missing.status_code == 404
    bad_path = client.get(f"/v1/jobs/{job['id']}/artefacts/a//b", headers=engineer)
    assert bad_path.status_code == 422 and bad_path.json()["reason"] == "invalid_path"
    for path in (f"/v1/jobs/{'f' * 32}", f"/v1/jobs/{'f' * 32}/logs", f"/v1/jobs/{'f' * 32}/artefacts"):
        assert client.get(path, headers=engineer).status_code == 404
    assert client.post(f"/v1/jobs/{'f' * 32}/cancel", headers=engineer).status_code == 404
    assert client.get("/v1/jobs/not-an-id", headers=engineer).status_code == 422


BAD_PARAMETERS: dict[str, Any] = {
    "no kind": {"params": {"dataset_id": "DS"}},
    "unknown kind": {"kind": "mining", "params": {"dataset_id": "DS"}},
    "no params": {"kind": "training"},
    "extra field": {"kind": "training", "params": {"dataset_id": "DS", "colour": "red"}},
    "zero epochs": {"kind": "training", "params": {"dataset_id": "DS", "config": {"epochs": 0}}},
    "negative lr": {"kind": "training", "params": {"dataset_id": "DS", "config": {"lr": -1}}},
    "huge batch": {"kind": "training", "params": {"dataset_id": "DS", "config": {"batch_size": 10**9}}},
    "unknown model": {"kind": "training", "params": {"dataset_id": "DS", "config": {"model": "gpt-5"}}},
    "wrong type": {"kind": "training", "params": {"dataset_id": "DS", "config": {"epochs": "many"}}},
    "local weights": {"kind": "training", "params": {"dataset_id": "DS", "config": {"weights": "/etc/passwd"}}},
    "bad split": {"kind": "training", "params": {"dataset_id": "DS", "evaluate_split": "train"}},
    "dataset id with a slash": {"kind": "training", "params": {"dataset_id": "../x"}},
    "unknown dataset": {"kind": "training", "params": {"dataset_id": "ds-000000000000"}},
    "unknown training job": {"kind": "evaluation", "params": {"training_job_id": "a" * 32}},
    "training job id malformed": {"kind": "evaluation", "params": {"training_job_id": "x"}},
    "gan size not supported": {"kind": "synthesis", "params": {"dataset_id": "DS", "gan": {"image_size": 17}}},
    "odd gan batch": {"kind": "synthesis", "params": {"dataset_id": "DS", "gan": {"batch_size": 7}}},
    "plan without its target": {"kind": "synthesis", "params": {"dataset_id": "DS", "plan": {"mode": "counts"}}},
    "too many gan steps": {"kind": "synthesis", "params": {"dataset_id": "DS", "gan": {"steps": 10**8}}},
    "a list": [1, 2, 3],
    "null": None,
}


@pytest.mark.parametrize("name", sorted(BAD_PARAMETERS))
def test_bad_parameters_get_422_with_a_reason(
    client: TestClient, engineer: dict[str, str], dataset_id: str, name: str
) -> None:
    body = BAD_PARAMETERS[name]
    if isinstance(body, dict) and isinstance(body.get("params"), dict) and body["params"].get("dataset_id") == "DS":
        body = {**body, "params": {**body["params"], "dataset_id": dataset_id}}
    response = _submit(client, engineer, body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_malformed_json_body(client: TestClient, engineer: dict[str, str]) -> None:
    response = client.post("/v1/jobs", headers={**engineer, "Content-Type": "application/json"}, content=b"{nope")
    assert response.status_code == 422


def test_evaluating_an_unfinished_training_job_is_refused(
    client: TestClient, engineer: dict[str, str], dataset_id: str
) -> None:
    training = _submit(client, engineer, {"kind": "training", "params": {"dataset_id": dataset_id}}).json()
    response = _submit(client, engineer, {"kind": "evaluation", "params": {"training_job_id": training["id"]}})
    assert response.status_code == 422 and "succeeded training job is needed" in response.json()["detail"]


def test_a_broker_that_is_down_gives_503_and_a_failed_job(
    shared_platform: Platform, engineer: dict[str, str], dataset_id: str
) -> None:
    services = Services.from_settings(shared_platform.settings)
    dead = shared_platform.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    services.dispatcher = Services.from_settings(dead).dispatcher
    services.dispatcher.app.conf.broker_connection_max_retries = 1
    services.dispatcher.app.conf.task_publish_retry_policy = {
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.1,
        "interval_max": 0.1,
    }
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            response = _submit(client, engineer, {"kind": "training", "params": {"dataset_id": dataset_id}})
            assert response.status_code == 503, response.text
            assert "queue is unavailable" in response.json()["detail"]
            failed = services.jobs.list(state=None).jobs[0]
            assert failed.state == "failed" and failed.error and "could not enqueue" in failed.error
    finally:
        services.close()


@pytest.mark.parametrize("limit", [1 << 20, 10])
def test_artefacts_download_from_memory_or_streamed_from_disk(
    client: TestClient,
    engineer: dict[str, str],
    dataset_id: str,
    shared_platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
) -> None:
    monkeypatch.setattr(jobs_router, "IN_MEMORY_LIMIT", limit)
    job = _submit(client, engineer, {"kind": "training", "params": {"dataset_id": dataset_id}}).json()
    store = FilesystemStore(shared_platform.root / "store")
    payload = bytes(range(256)) * 64
    store.put_bytes(f"runs/{job['id']}/epochs/checkpoint.pth", payload)
    listed = client.get(f"/v1/jobs/{job['id']}/artefacts", headers=engineer).json()
    assert listed == [{"path": "epochs/checkpoint.pth", "size": len(payload), "url": None}]
    response = client.get(f"/v1/jobs/{job['id']}/artefacts/epochs/checkpoint.pth", headers=engineer)
    assert response.status_code == 200 and response.content == payload
    assert response.headers["content-type"] == "application/octet-stream"
