"""The object store (S3 over HTTP: moto behind a TCP proxy that is cut and restored) goes away mid-job:
the worker retries with Celery's backoff and jitter, and the job resumes from its checkpoint once the
store is back. Production defaults throughout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from dermasynth.classifier.config import TrainConfig
from dermasynth.config import Settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobState, RedisJobStore
from dermasynth.jobs.params import TrainingParams
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.jobs.submission import submit_job
from dermasynth.storage import open_store
from tests.conftest import free_port
from tests.services.platform import Platform, wait_until
from tests.services.worker.faults import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxied_s3() -> Iterator[TcpProxy]:
    """moto's S3 server, reached through a proxy the test can cut (moto keeps its objects meanwhile)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with TcpProxy(port) as proxy:
            yield proxy
    finally:
        server.stop()


def s3_env(proxy: TcpProxy) -> dict[str, str]:
    return {
        "DERMASYNTH_STORE": "s3",
        "DERMASYNTH_S3_ENDPOINT": f"127.0.0.1:{proxy.port}",
        "DERMASYNTH_S3_BUCKET": f"b-{uuid.uuid4().hex[:8]}",
        "DERMASYNTH_S3_ACCESS_KEY": "test",
        "DERMASYNTH_S3_SECRET_KEY": "test-secret",
    }


def test_a_store_outage_mid_job_is_retried_and_the_job_resumes(
    platform: Platform, proxied_s3: TcpProxy, demo_dataset: Manifest
) -> None:
    env = s3_env(proxied_s3)
    settings = Settings(
        **{
            **platform.settings.model_dump(),
            "store": "s3",
            "s3_endpoint": env["DERMASYNTH_S3_ENDPOINT"],
            "s3_bucket": env["DERMASYNTH_S3_BUCKET"],
            "s3_access_key": "test",
            "s3_secret_key": "test-secret",
        }
    )
    store = open_store(settings)
    registry = DatasetCatalog(store, settings.cache_root)
    dataset = registry.publish(demo_dataset.root, name="demo", origin="local", owner="test")
    jobs = RedisJobStore.from_url(settings.redis_url, settings.job_key_prefix)
    platform.start_worker("only", env=env)
    config = TrainConfig(model="mobilenet_v3_small", image_size=16, batch_size=16, num_workers=0, epochs=8)
    job = submit_job(
        JobKind.TRAINING,
        TrainingParams(dataset_id=dataset.id, config=config, evaluate_split=None),
        owner="test",
        jobs=jobs,
        dispatcher=CeleryDispatcher(make_celery(settings)),
        registry=registry,
    )

    def second_epoch() -> bool:
        progress = jobs.get(job.id).progress
        return progress is not None and (progress.epoch or 0) >= 2

    wait_until(second_epoch, 300, "the job's second epoch", interval=0.1)
    proxied_s3.cut()
    wait_until(
        lambda: any("transient error" in line for line in jobs.logs(job.id).lines),
        60,
        "the worker to meet the outage",
        interval=0.5,
    )
    assert not jobs.get(job.id).terminal
    proxied_s3.restore()

    wait_until(lambda: jobs.get(job.id).terminal, 300, "the job to finish after the outage", interval=0.5)
    record = jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED, (record, jobs.logs(job.id).lines[-10:])
    assert record.attempts >= 2 and record.result["epochs_run"] == 8
    lines = jobs.logs(job.id).lines
    retry = next(line for line in lines if "transient error" in line)
    assert "MaxRetryError" in retry and "retry 1/5 in" in retry  # Celery backoff, production retries
    assert store.exists(f"runs/{job.id}/_COMPLETE.json")
