"""Redis (the broker and the job store, AOF on) restarted while one job runs and another waits: nothing
is lost, both jobs succeed, and the running one is not started again."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobState, RedisJobStore
from dermasynth.jobs.params import TrainingParams
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.jobs.submission import submit_job
from dermasynth.storage import FilesystemStore
from tests.services.platform import Platform, wait_until
from tests.services.worker.faults import OwnRedis

pytestmark = pytest.mark.integration


def test_redis_restart_loses_no_job(tmp_path: Path, demo_dataset: Manifest) -> None:
    server = OwnRedis(tmp_path / "redis").start()
    platform = Platform(server.url, tmp_path / "platform")
    try:
        settings = platform.settings
        store = FilesystemStore(settings.store_root)
        registry = DatasetCatalog(store, settings.cache_root)
        dataset = registry.publish(demo_dataset.root, name="demo", origin="local", owner="test")
        jobs = RedisJobStore.from_url(settings.redis_url, settings.job_key_prefix)
        platform.start_worker("only")
        config = TrainConfig(model="mobilenet_v3_small", image_size=16, batch_size=16, num_workers=0, epochs=8)
        params = TrainingParams(dataset_id=dataset.id, config=config, evaluate_split=None)
        dispatcher = CeleryDispatcher(make_celery(settings))
        running, waiting = (
            submit_job(JobKind.TRAINING, params, owner="test", jobs=jobs, dispatcher=dispatcher, registry=registry)
            for _ in range(2)
        )

        def mid_training() -> bool:
            progress = jobs.get(running.id).progress
            return progress is not None and (progress.epoch or 0) >= 2

        wait_until(mid_training, 300, "the first job's second epoch", interval=0.1)
        assert jobs.get(waiting.id).state == JobState.QUEUED
        server.restart()

        wait_until(lambda: jobs.get(waiting.id).terminal, 300, "both jobs to finish", interval=0.5)
        for job in (running, waiting):
            record = jobs.get(job.id)
            assert record.state == JobState.SUCCEEDED, (record, jobs.logs(job.id).lines[-10:])
            assert record.attempts == 1 and record.result["epochs_run"] == 8
        assert jobs.running_counts(["train"]) == {"train": 0}
        log = (platform.root / "worker-only.log").read_text()
        assert "progress not stored, Redis does not answer" in log  # the job met the outage and went on
    finally:
        platform.close()
        server.stop()
