"""``dermasynth_queue_jobs{queue,state}`` on the gateway's /metrics: what an autoscaler scales workers on."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from dermasynth.jobs import JobKind, JobRecord, RedisJobStore
from tests.services.platform import Platform


def _gauge(text: str, queue: str, state: str) -> float:
    line = next(
        line
        for line in text.splitlines()
        if line.startswith(f'dermasynth_queue_jobs{{queue="{queue}",state="{state}"}}')
    )
    return float(line.rsplit(" ", 1)[1])


def test_running_and_queued_jobs_per_queue(
    client: TestClient, engineer: dict[str, str], admin: dict[str, str], dataset_id: str, shared_platform: Platform
) -> None:
    settings = shared_platform.settings
    jobs = RedisJobStore.from_url(settings.redis_url, settings.job_key_prefix)
    before = client.get("/metrics", headers=admin).text
    queued, running = _gauge(before, "train", "queued"), _gauge(before, "gan", "running")
    job = client.post("/v1/jobs", headers=engineer, json={"kind": "training", "params": {"dataset_id": dataset_id}})
    assert job.status_code == 202
    lost = jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.SYNTHESIS, queue="gan", params={}))
    jobs.acquire_lease(lost.id, "worker:1", 60, queue="gan")  # a worker runs it
    after = client.get("/metrics", headers=admin).text
    assert _gauge(after, "train", "queued") == queued + 1 and _gauge(after, "gan", "running") == running + 1
    jobs.release_lease(lost.id, "worker:1", queue="gan")
    assert _gauge(client.get("/metrics", headers=admin).text, "gan", "running") == running
