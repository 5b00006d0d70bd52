"""The sweeper against a real Redis and a real Celery broker (the platform's queues): jobs of lost workers
go back to their queue, poison jobs fail with their reason, cancelled ones end cancelled.

A lost worker is made the way a ``kill -9`` leaves it: its lease taken, never renewed, run out. The
sweeper itself runs with the production settings.
"""

from __future__ import annotations

import time
import uuid

import pytest

from dermasynth.jobs import JobKind, JobRecord, JobState, RedisJobStore
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from services.worker.sweeper import Sweeper, sweep_interval
from tests.services.platform import Platform


@pytest.fixture
def sweeper(platform: Platform) -> Sweeper:
    settings = platform.settings
    jobs = RedisJobStore.from_url(settings.redis_url, settings.job_key_prefix)
    return Sweeper(jobs, CeleryDispatcher(make_celery(settings)), settings)


def _lost_running_job(jobs: RedisJobStore) -> JobRecord:
    """A running job whose worker died: the lease it took has run out."""
    job = jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={}))
    assert jobs.acquire_lease(job.id, "dead-worker:1", 0.05, queue="train")
    jobs.transition(job.id, JobState.RUNNING, worker="dead-worker:1")
    time.sleep(0.1)
    return job


def test_defaults_sweep_every_third_of_a_lease(platform: Platform) -> None:
    assert platform.settings.job_lease_s == 60 and sweep_interval(platform.settings) == 20


def test_a_lost_worker_s_job_is_queued_again_once(sweeper: Sweeper) -> None:
    jobs = sweeper.jobs
    job = _lost_running_job(jobs)
    alive = jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={}))
    jobs.acquire_lease(alive.id, "live-worker:2", 60, queue="train")
    jobs.transition(alive.id, JobState.RUNNING, worker="live-worker:2")
    before = sweeper.dispatcher.queue_lengths()["train"]
    assert sweeper.sweep() == [job.id]
    assert sweeper.sweep() == []  # nothing twice
    record = jobs.get(job.id)
    assert record.state == JobState.QUEUED and record.attempts == 1
    assert sweeper.dispatcher.queue_lengths()["train"] == before + 1
    assert jobs.get(alive.id).state == JobState.RUNNING and jobs.running_counts(["train"]) == {"train": 1}


def test_a_job_that_keeps_losing_its_workers_fails_as_poison(sweeper: Sweeper) -> None:
    jobs = sweeper.jobs
    job = _lost_running_job(jobs)
    limit = sweeper.settings.job_max_worker_losses
    for loss in range(1, limit + 1):
        assert sweeper.sweep() == [job.id]
        if loss < limit:  # the next worker takes it and dies too
            assert jobs.get(job.id).state == JobState.QUEUED
            jobs.acquire_lease(job.id, f"worker:{loss}", 0.05, queue="train")
            jobs.transition(job.id, JobState.RUNNING, worker=f"worker:{loss}")
            time.sleep(0.1)
    record = jobs.get(job.id)
    assert record.state == JobState.FAILED and record.attempts == limit
    assert record.error is not None and record.error.startswith("PoisonJob: the job's worker was lost 3 times")
    assert "DERMASYNTH_JOB_MAX_WORKER_LOSSES=3" in record.error and f"runs/{job.id}/" in record.error
    assert jobs.running_counts(["train"]) == {"train": 0}


def test_a_lost_job_that_was_cancelled_ends_cancelled(sweeper: Sweeper) -> None:
    jobs = sweeper.jobs
    job = jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={}))
    jobs.acquire_lease(job.id, "w:1", 0.3, queue="train")
    jobs.transition(job.id, JobState.RUNNING, worker="w:1")
    assert jobs.request_cancel(job.id).state == JobState.RUNNING  # its worker still held the lease ...
    time.sleep(0.4)  # ... then died before its next step
    assert sweeper.sweep() == [job.id]
    record = jobs.get(job.id)
    assert record.state == JobState.CANCELLED and record.result == {"run": f"runs/{job.id}"}


def test_a_hand_back_whose_worker_died_is_re_sent(sweeper: Sweeper) -> None:
    jobs = sweeper.jobs
    job = jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="gan", params={}))
    jobs.acquire_lease(job.id, "w:1", 60, queue="gan")
    jobs.transition(job.id, JobState.RUNNING, worker="w:1")
    jobs.transition(job.id, JobState.QUEUED)  # handing back on SIGTERM ...
    jobs.abandon_lease(job.id, "w:1", queue="gan", delay_s=0.05)  # ... and killed before re-sending
    time.sleep(0.1)
    before = sweeper.dispatcher.queue_lengths()["gan"]
    assert sweeper.sweep() == [job.id]
    assert sweeper.dispatcher.queue_lengths()["gan"] == before + 1 and jobs.get(job.id).state == JobState.QUEUED
    assert jobs.redis.get(f"{jobs.prefix}:job:{job.id}:losses") is None  # a hand-back is no loss


def test_liveness_file_is_touched_by_the_sweeper_thread(sweeper: Sweeper, platform: Platform) -> None:
    from services.worker.health import check

    settings = platform.settings.model_copy(update={"worker_liveness_file": platform.root / "alive"})
    sweeper.liveness_file = settings.worker_liveness_file
    assert "does not exist" in (check(settings) or "")
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while not settings.worker_liveness_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert check(settings) is None
    finally:
        sweeper.stop()
