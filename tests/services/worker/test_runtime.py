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
from tests.services.worker.faults import TcpProxy
from tests.services.worker.test_store_outage import s3_env

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


def test_a_duplicate_message_of_a_job_another_worker_runs_is_dropped(
    resources: WorkerResources, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job(resources, {"dataset_id": "ds-x", "config": TINY})
    assert resources.jobs.acquire_lease(job.id, "other-host:7", 60, queue="train")
    resources.jobs.transition(job.id, JobState.RUNNING, worker="other-host:7")
    with caplog.at_level(logging.INFO, logger="services.worker.runtime"):
        training.apply(args=(job.id,))
    record = resources.jobs.get(job.id)
    assert record.state == JobState.RUNNING and record.attempts == 1 and record.worker == "other-host:7"
    assert "held by live worker other-host:7; dropping this duplicate message" in caplog.text
    assert resources.jobs.lease_holder(job.id) == "other-host:7"


def test_a_store_outage_fails_the_job_clearly_and_a_resubmission_succeeds_once_it_is_back(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, demo_dataset: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    """Eagerly (no countdowns): each attempt meets the outage after the S3 client's own retries (about 6 s),
    so one Celery retry is allowed here instead of the production 5 (test_store_outage.py runs those)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with TcpProxy(port) as proxy:
            resources = use_platform(platform, monkeypatch, DERMASYNTH_JOB_MAX_RETRIES="1", **s3_env(proxy))
            dataset = resources.registry.publish(demo_dataset.root, name="demo", origin="local")
            job = _job(resources, {"dataset_id": dataset.id, "config": TINY})
            proxy.cut()  # the store goes away before the job runs
            with caplog.at_level(logging.WARNING, logger="services.worker.runtime"):
                training.apply(args=(job.id,))
            record = resources.jobs.get(job.id)
            assert record.state == JobState.FAILED and record.attempts == 0, record
            assert record.error is not None and record.error.startswith("MaxRetryError")
            assert f"port={proxy.port}" in record.error and "Connection refused" in record.error
            assert "transient error" in caplog.text and "retry 1/1" in caplog.text and "retry 2/1" not in caplog.text

            proxy.restore()
            again = _job(resources, {"dataset_id": dataset.id, "config": TINY})
            training.apply(args=(again.id,))
            assert resources.jobs.get(again.id).state == JobState.SUCCEEDED
    finally:
        server.stop()
        get_settings.cache_clear()
        worker_resources.cache_clear()
