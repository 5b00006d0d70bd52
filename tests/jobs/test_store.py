"""The Redis job store against a real Redis (DB 11, a key prefix per test)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from dermasynth.jobs import InvalidTransition, JobKind, JobNotFound, JobRecord, JobState, RedisJobStore
from dermasynth.progress import Progress


@pytest.fixture
def jobs(redis_url: str, redis_prefix: str) -> RedisJobStore:
    return RedisJobStore(redis.Redis.from_url(redis_url), redis_prefix, max_log_lines=5)


def _job(kind: JobKind = JobKind.TRAINING) -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, kind=kind, queue="train", params={"dataset_id": "ds-1"}, owner="k1")


def test_create_get_and_refuse_duplicates(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    got = jobs.get(job.id)
    assert got.state == JobState.QUEUED and got.params == {"dataset_id": "ds-1"} and got.owner == "k1"
    assert got.progress is None and not got.cancel_requested
    with pytest.raises(ValueError, match="already exists"):
        jobs.create(job)
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        jobs.get("nope")


def test_life_of_a_job(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    running = jobs.transition(job.id, JobState.RUNNING, worker="w1")
    assert running.attempts == 1 and running.worker == "w1" and running.started_at is not None
    jobs.set_progress(job.id, Progress(phase="train", epoch=1, total_epochs=3, metrics={"val_bacc": 0.5}))
    again = jobs.transition(job.id, JobState.RUNNING, worker="w2")  # redelivered to another worker
    assert again.attempts == 2 and again.started_at == running.started_at and again.progress is not None
    assert again.progress.metrics == {"val_bacc": 0.5}
    done = jobs.transition(job.id, JobState.SUCCEEDED, result={"run": f"runs/{job.id}"})
    assert done.finished_at is not None and done.result == {"run": f"runs/{job.id}"}
    with pytest.raises(InvalidTransition):
        jobs.transition(job.id, JobState.RUNNING)


def test_failed_job_keeps_its_error(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    jobs.transition(job.id, JobState.RUNNING)
    failed = jobs.transition(job.id, JobState.FAILED, error="ValidationError: epochs must be >= 1")
    assert jobs.get(job.id).error == failed.error == "ValidationError: epochs must be >= 1"


def test_list_filters_and_pages_newest_first(jobs: RedisJobStore) -> None:
    made = []
    for kind in (JobKind.TRAINING, JobKind.SYNTHESIS, JobKind.TRAINING, JobKind.EVALUATION):
        made.append(jobs.create(_job(kind)))
        time.sleep(0.002)
    jobs.transition(made[0].id, JobState.CANCELLED)
    page = jobs.list()
    assert [j.id for j in page.jobs] == [j.id for j in reversed(made)] and page.total == 4
    training = jobs.list(kind=JobKind.TRAINING)
    assert [j.id for j in training.jobs] == [made[2].id, made[0].id]
    queued = jobs.list(state=JobState.QUEUED, limit=2, offset=1)
    assert queued.total == 3 and [j.id for j in queued.jobs] == [made[2].id, made[1].id]


def test_logs_keep_the_newest_lines_and_page_by_line_number(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    for n in range(8):
        jobs.append_log(job.id, f"line {n}")
    page = jobs.logs(job.id)
    assert page.start == 3 and page.next == 8 and page.lines == [f"line {n}" for n in range(3, 8)]
    assert jobs.logs(job.id, since=6).lines == ["line 6", "line 7"]
    assert jobs.logs(job.id, since=8).lines == []
    with pytest.raises(JobNotFound):
        jobs.logs("nope")


def test_cancel_queued_is_immediate_running_is_a_flag_final_is_refused(jobs: RedisJobStore) -> None:
    queued = jobs.create(_job())
    assert jobs.request_cancel(queued.id).state == JobState.CANCELLED
    running = jobs.create(_job())
    jobs.transition(running.id, JobState.RUNNING)
    flagged = jobs.request_cancel(running.id)
    assert flagged.state == JobState.RUNNING and flagged.cancel_requested and jobs.cancel_requested(running.id)
    with pytest.raises(InvalidTransition, match="cancelled"):
        jobs.request_cancel(queued.id)


def test_leases_exclude_other_workers_until_they_expire(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    assert jobs.acquire_lease(job.id, "w1", 0.3)
    assert jobs.acquire_lease(job.id, "w1", 0.3)  # the holder renews
    assert not jobs.acquire_lease(job.id, "w2", 0.3)
    assert not jobs.renew_lease(job.id, "w2", 0.3)
    time.sleep(0.4)  # w1 died: its lease runs out
    assert jobs.acquire_lease(job.id, "w2", 5)
    assert not jobs.renew_lease(job.id, "w1", 5)
    jobs.release_lease(job.id, "w1")  # not the holder: nothing happens
    assert not jobs.acquire_lease(job.id, "w1", 5)
    jobs.release_lease(job.id, "w2")
    assert jobs.acquire_lease(job.id, "w1", 5)
