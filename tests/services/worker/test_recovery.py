"""``kill -9`` workers mid-training with the production defaults (60 s lease, 12 h visibility timeout): a
new worker's sweeper re-sends the job within about lease + lease/3 and it resumes from its checkpoint;
a job whose worker is dead (no beat for 15 s) is cancelled at once. The slowest test of the suite (about
2 minutes, most of it the 60 s lease running out)."""

from __future__ import annotations

import os
import time

import pytest
import redis

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobState, RedisJobStore
from dermasynth.jobs.params import TrainingParams
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.jobs.store import ALIVE_S
from dermasynth.jobs.submission import cancel_job, submit_job
from dermasynth.storage import FilesystemStore
from tests.services.platform import Platform, wait_until

pytestmark = pytest.mark.integration

RECOVERY_GOAL_S = 150


def test_killed_workers_jobs_resume_elsewhere_or_cancel_at_once(platform: Platform, demo_dataset: Manifest) -> None:
    settings = platform.settings
    assert settings.job_visibility_timeout_s == 12 * 3600 and settings.job_lease_s == 60  # production defaults
    store = FilesystemStore(settings.store_root)
    registry = DatasetCatalog(store, settings.cache_root)
    dataset = registry.publish(demo_dataset.root, name="demo", origin="local", owner="test")
    jobs = RedisJobStore(redis.Redis.from_url(settings.redis_url), settings.job_key_prefix)
    dispatcher = CeleryDispatcher(make_celery(settings))
    first, doomed = platform.start_worker("first"), platform.start_worker("doomed")
    config = TrainConfig(model="mobilenet_v3_small", image_size=16, batch_size=16, num_workers=0, epochs=12)
    params = TrainingParams(dataset_id=dataset.id, config=config, evaluate_split=None)
    job, other = (
        submit_job(JobKind.TRAINING, params, owner="test", jobs=jobs, dispatcher=dispatcher, registry=registry)
        for _ in range(2)
    )
    run = settings.store_root / "runs" / job.id

    def both_running_and_first_checkpointed() -> bool:
        record = jobs.get(job.id)
        assert record.state in (JobState.QUEUED, JobState.RUNNING), record
        return (
            jobs.get(other.id).state == JobState.RUNNING
            and (run / "epoch_001.pth").is_file()
            and (record.progress is not None and (record.progress.epoch or 0) >= 2)
        )

    wait_until(both_running_and_first_checkpointed, 300, "both jobs running, one past its first epoch")
    first_checkpoint = os.stat(run / "epoch_001.pth")
    platform.kill(first)
    platform.kill(doomed)
    killed_at = time.monotonic()
    assert jobs.get(job.id).state == JobState.RUNNING  # nobody told the job store: the workers just died

    # Once the dead worker has missed its beats (ALIVE_S), a cancel ends its job at once, long before its
    # lease expires (the lease keeps other workers off the job; a cancel needs no other worker).
    alive = f"{settings.job_key_prefix}:job:{other.id}:alive"
    wait_until(lambda: not jobs.redis.exists(alive), ALIVE_S + 5, "the dead worker's beats to stop")
    assert jobs.lease_holder(other.id) is not None
    cancelled = cancel_job(other.id, jobs, dispatcher)
    assert cancelled.state == JobState.CANCELLED and cancelled.result["run"] == f"runs/{other.id}"
    assert time.monotonic() - killed_at < ALIVE_S + 5

    platform.start_worker("second")
    wait_until(lambda: jobs.get(job.id).attempts == 2, RECOVERY_GOAL_S, "the job to restart on the second worker", 0.5)
    recovered_s = time.monotonic() - killed_at
    assert recovered_s <= RECOVERY_GOAL_S
    wait_until(lambda: jobs.get(job.id).terminal, 300, "the job to finish on the second worker", interval=0.5)
    record = jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED, (record, jobs.logs(job.id).lines)
    assert record.attempts == 2 and record.worker and record.worker.startswith("second-")
    assert record.result["epochs_run"] == 12
    resumed = os.stat(run / "epoch_001.pth")
    assert (resumed.st_ino, resumed.st_mtime_ns) == (first_checkpoint.st_ino, first_checkpoint.st_mtime_ns), (
        "epoch 1 was trained again instead of resumed from its checkpoint"
    )
    assert (run / "epoch_012.pth").is_file() and (run / "_COMPLETE.json").is_file()
    assert jobs.get(other.id).state == JobState.CANCELLED  # the sweeper did not revive the cancelled job
    print(f"recovered {recovered_s:.0f} s after kill -9")
