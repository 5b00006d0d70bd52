"""The job runtime, run in-process through Celery's ``apply`` (the real task code, without a broker)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from moto.server import ThreadedMotoServer

from dermasynth.config import get_settings
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobRecord, JobState
from dermasynth.jobs.submission import COMPLETION_MARKER
from services.worker.resources import WorkerResources, worker_resources
from services.worker.tasks.training import training
from tests.conftest import free_port
from tests.services.platform import Platform
from tests.services.worker.conftest import use_platform

TINY = {"model": "mobilenet_v3_small", "image_size": 16, "batch_size": 16, "num_workers": 0, "epochs": 1}


def _job(resources: WorkerResources, params: dict[str, object]) -> JobRecord:
    return resources.jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params=params))


def test_invalid_parameters_fail_at_once_with_their_message(resources: WorkerResources) -> None:
    job = _job(resources, {"dataset_id": "ds-x", "config": {**TINY, "epochs": 0}})
    training.apply(args=(job.id,))
    record = resources.jobs.get(job.id)
    assert record.state == JobState.FAILED and record.attempts == 1
    assert record.error is not None and record.error.startswith("ValidationError") and "epochs" in record.error
    assert any("failed" in line for line in resources.jobs.logs(job.id).lines)


def test_a_missing_dataset_fails_at_once(resources: WorkerResources) -> None:
    job = _job(resources, {"dataset_id": "ds-gone", "config": TINY})
    training.apply(args=(job.id,))
    record = resources.jobs.get(job.id)
    assert record.state == JobState.FAILED and record.error == "DatasetNotFound: no dataset with id 'ds-gone'"


def test_a_finished_job_is_not_run_again(resources: WorkerResources) -> None:
    job = _job(resources, {"dataset_id": "ds-x", "config": TINY})
    resources.store.put_bytes(f"runs/{job.id}/{COMPLETION_MARKER}", json.dumps({"best_epoch": 1}).encode())
    training.apply(args=(job.id,))
    record = resources.jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED and record.result == {"best_epoch": 1}
    assert resources.store.list(f"runs/{job.id}/") == [f"runs/{job.id}/{COMPLETION_MARKER}"]
    training.apply(args=(job.id,))  # a redelivered message of a final job changes nothing
    assert resources.jobs.get(job.id) == record


def test_a_job_cancelled_while_its_worker_was_down_ends_cancelled(resources: WorkerResources) -> None:
    job = _job(resources, {"dataset_id": "ds-x", "config": TINY})
    resources.jobs.transition(job.id, JobState.RUNNING)  # its worker died mid-run ...
    resources.jobs.request_cancel(job.id)  # ... and then the user cancelled it
    training.apply(args=(job.id,))
    assert resources.jobs.get(job.id).state == JobState.CANCELLED


def test_transient_storage_errors_are_retried_then_fail(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, demo_dataset: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        resources = use_platform(
            platform,
            monkeypatch,
            DERMASYNTH_STORE="s3",
            DERMASYNTH_S3_ENDPOINT=f"127.0.0.1:{port}",
            DERMASYNTH_S3_BUCKET=f"b-{uuid.uuid4().hex[:8]}",
            DERMASYNTH_S3_ACCESS_KEY="test",
            DERMASYNTH_S3_SECRET_KEY="test-secret",
        )
        dataset = resources.registry.publish(demo_dataset.root, name="demo", origin="local")
        job = _job(resources, {"dataset_id": dataset.id, "config": TINY})
    finally:
        server.stop()  # the store goes away before the job runs
    try:
        with caplog.at_level(logging.WARNING, logger="services.worker.runtime"):
            training.apply(args=(job.id,))
        record = resources.jobs.get(job.id)
        assert record.state == JobState.FAILED and record.attempts == 0, record
        assert record.error is not None and record.error.startswith("MaxRetryError")
        assert "transient error" in caplog.text and "retry 1/1" in caplog.text and "retry 2/1" not in caplog.text
    finally:
        get_settings.cache_clear()
        worker_resources.cache_clear()
