"""SIGTERM a worker mid-training (a Kubernetes scale-down): it stops at its next checkpoint, hands the job
back and exits well within the grace period; another worker finishes the job from that checkpoint."""

from __future__ import annotations

import time

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


def test_sigterm_hands_the_job_back_within_the_grace_period(platform: Platform, demo_dataset: Manifest) -> None:
    settings = platform.settings
    store = FilesystemStore(settings.store_root)
    registry = DatasetCatalog(store, settings.cache_root)
    dataset = registry.publish(demo_dataset.root, name="demo", origin="local", owner="test")
    jobs = RedisJobStore(redis.Redis.from_url(settings.redis_url), settings.job_key_prefix)
    workers = {name: platform.start_worker(name) for name in ("first", "second")}
    config = TrainConfig(model="mobilenet_v3_small", image_size=16, batch_size=16, num_workers=0, epochs=12)
    job = submit_job(
        JobKind.TRAINING,
        TrainingParams(dataset_id=dataset.id, config=config, evaluate_split=None),
        owner="test",
        jobs=jobs,
        dispatcher=CeleryDispatcher(make_celery(settings)),
        registry=registry,
    )
    run = settings.store_root / "runs" / job.id

    def mid_second_epoch() -> bool:
        progress = jobs.get(job.id).progress
        return progress is not None and progress.phase == "train" and progress.epoch == 2

    wait_until(mid_second_epoch, 300, "the job's second epoch", interval=0.05)
    holder = str(jobs.get(job.id).worker).split("-", 1)[0]
    other = next(name for name in workers if name != holder)
    workers[holder].terminate()  # SIGTERM to the worker process, as the kubelet sends it
    terminated_at = time.monotonic()
    workers[holder].wait(timeout=settings.worker_shutdown_grace_s)
    exited_s = time.monotonic() - terminated_at
    log = (platform.root / f"worker-{holder}.log").read_text()
    assert "handed back to the train queue" in log, log[-3000:]
    assert exited_s < settings.worker_shutdown_grace_s

    wait_until(lambda: jobs.get(job.id).terminal, 300, "the job to finish on the second worker", interval=0.5)
    record = jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED, (record, jobs.logs(job.id).lines[-20:])
    assert record.attempts == 2 and record.worker and record.worker.startswith(f"{other}-")
    assert record.result["epochs_run"] == 12 and (run / "_COMPLETE.json").is_file()
    assert (run / "epoch_002.pth").is_file()  # the epoch under way at SIGTERM was finished and checkpointed
    assert jobs.redis.get(f"{jobs.prefix}:job:{job.id}:losses") is None  # a hand-back is not a lost worker
    assert workers[other].poll() is None
    print(f"worker exited {exited_s:.1f} s after SIGTERM")
