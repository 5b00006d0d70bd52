"""``kill -9`` the worker mid-training; a new worker picks the job up again and resumes from its checkpoint."""

from __future__ import annotations

import os

import pytest
import redis

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobState, RedisJobStore
from dermasynth.jobs.params import TrainingParams
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.jobs.submission import submit_job
from dermasynth.storage import FilesystemStore
from tests.services.platform import Platform, wait_until

pytestmark = pytest.mark.integration


def test_a_killed_worker_s_job_resumes_on_another_worker(platform: Platform, demo_dataset: Manifest) -> None:
    settings = platform.settings
    store = FilesystemStore(settings.store_root)
    registry = DatasetCatalog(store, settings.cache_root)
    dataset = registry.publish(demo_dataset.root, name="demo", origin="local")
    jobs = RedisJobStore(redis.Redis.from_url(settings.redis_url), settings.job_key_prefix)
    first = platform.start_worker("first")
    config = TrainConfig(model="mobilenet_v3_small", image_size=16, batch_size=16, num_workers=0, epochs=4)
    job = submit_job(
        JobKind.TRAINING,
        TrainingParams(dataset_id=dataset.id, config=config, evaluate_split=None),
        owner="test",
        jobs=jobs,
        dispatcher=CeleryDispatcher(make_celery(settings)),
        registry=registry,
    )
    run = settings.store_root / "runs" / job.id

    def second_epoch() -> bool:
        record = jobs.get(job.id)
        assert record.state in (JobState.QUEUED, JobState.RUNNING), record
        return (run / "epoch_001.pth").is_file() and (record.progress is not None and (record.progress.epoch or 0) >= 2)

    wait_until(second_epoch, 300, "the first epoch's checkpoint", interval=0.2)
    first_checkpoint = os.stat(run / "epoch_001.pth")
    platform.kill(first)
    assert jobs.get(job.id).state == JobState.RUNNING  # nobody told the job store: the worker just died

    platform.start_worker("second")
    wait_until(lambda: jobs.get(job.id).terminal, 300, "the job to finish on the second worker", interval=0.5)
    record = jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED, (record, jobs.logs(job.id).lines)
    assert record.attempts == 2 and record.worker and record.worker.startswith("second-")
    assert record.result["epochs_run"] == 4
    resumed = os.stat(run / "epoch_001.pth")
    assert (resumed.st_ino, resumed.st_mtime_ns) == (first_checkpoint.st_ino, first_checkpoint.st_mtime_ns), (
        "epoch 1 was trained again instead of resumed from its checkpoint"
    )
    assert (run / "epoch_004.pth").is_file() and (run / "_COMPLETE.json").is_file()
