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
    jobs.acquire_lease(running.id, "w1", 30, queue="train")  # its worker lives
    jobs.transition(running.id, JobState.RUNNING)
    flagged = jobs.request_cancel(running.id)
    assert flagged.state == JobState.RUNNING and flagged.cancel_requested and jobs.cancel_requested(running.id)
    with pytest.raises(InvalidTransition, match="cancelled"):
        jobs.request_cancel(queued.id)


def test_leases_exclude_other_workers_until_they_expire(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    assert jobs.acquire_lease(job.id, "w1", 0.3, queue="train")
    assert jobs.acquire_lease(job.id, "w1", 0.3, queue="train")  # the holder renews
    assert not jobs.acquire_lease(job.id, "w2", 0.3, queue="train")
    assert not jobs.renew_lease(job.id, "w2", 0.3, queue="train")
    time.sleep(0.4)  # w1 died: its lease runs out
    assert jobs.acquire_lease(job.id, "w2", 5, queue="train")
    assert not jobs.renew_lease(job.id, "w1", 5, queue="train")
    jobs.release_lease(job.id, "w1", queue="train")  # not the holder: nothing happens
    assert not jobs.acquire_lease(job.id, "w1", 5, queue="train")
    jobs.release_lease(job.id, "w2", queue="train")
    assert jobs.acquire_lease(job.id, "w1", 5, queue="train")


def test_running_set_follows_the_lease(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    assert jobs.running_counts(["train", "gan"]) == {"train": 0, "gan": 0}
    jobs.acquire_lease(job.id, "w1", 5, queue="train")
    assert jobs.running_counts(["train", "gan"]) == {"train": 1, "gan": 0}
    assert jobs.lease_holder(job.id) == "w1" and jobs.expired_running("train") == []
    before = jobs.redis.zscore(jobs.running_key("train"), job.id)
    time.sleep(0.01)
    jobs.renew_lease(job.id, "w1", 5, queue="train")
    assert jobs.redis.zscore(jobs.running_key("train"), job.id) > before  # scored by lease expiry
    jobs.release_lease(job.id, "w1", queue="train")
    assert jobs.running_counts(["train"]) == {"train": 0} and jobs.lease_holder(job.id) is None


def test_only_one_sweeper_claims_a_lost_worker_s_job(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    jobs.acquire_lease(job.id, "w1", 0.2, queue="train")
    assert jobs.expired_running("train") == [] and jobs.claim_expired(job.id, "train", 5) is None  # alive
    time.sleep(0.3)  # w1 was killed: its lease expired, its entry stays
    assert jobs.expired_running("train") == [job.id]
    claim = jobs.claim_expired(job.id, "train", 5)
    assert claim is not None and claim.job_id == job.id
    assert jobs.claim_expired(job.id, "train", 5) is None  # a second sweeper gets nothing
    assert jobs.expired_running("train") == []  # the claim holds the entry for 5 s
    assert jobs.count_loss(job.id) == 1 and jobs.count_loss(job.id) == 2
    jobs.unclaim(claim)
    assert jobs.running_counts(["train"]) == {"train": 0}


def test_unclaim_keeps_an_entry_a_new_worker_made(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    jobs.acquire_lease(job.id, "w1", 5, queue="train")
    claim = jobs.abandon_lease(job.id, "w1", queue="train", delay_s=5)  # a hand-back
    assert claim is not None and jobs.lease_holder(job.id) is None
    assert jobs.abandon_lease(job.id, "w1", queue="train") is None  # no lease any more
    jobs.acquire_lease(job.id, "w2", 30, queue="train")  # the job was picked up before the unclaim
    jobs.unclaim(claim)
    assert jobs.running_counts(["train"]) == {"train": 1}


def test_abandoned_job_is_expired_at_once(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    jobs.acquire_lease(job.id, "w1", 60, queue="gan")
    jobs.abandon_lease(job.id, "w1", queue="gan")
    assert jobs.expired_running("gan") == [job.id] and jobs.claim_expired(job.id, "gan", 5) is not None


def test_cancel_of_a_running_job_whose_worker_stopped_beating_is_immediate(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    jobs.acquire_lease(job.id, "w1", 60, queue="train")  # a long lease ...
    jobs.transition(job.id, JobState.RUNNING, worker="w1")
    assert jobs.request_cancel(job.id).state == JobState.RUNNING  # w1 beats: it stops at its next step
    jobs.redis.delete(f"{jobs.prefix}:job:{job.id}:alive")  # ... but w1 has not beaten for ALIVE_S
    assert jobs.lease_holder(job.id) == "w1"  # its lease still keeps other workers off the job
    assert jobs.request_cancel(job.id).state == JobState.CANCELLED


def test_cancel_of_a_running_job_whose_worker_is_gone_is_immediate(jobs: RedisJobStore) -> None:
    job = jobs.create(_job())
    jobs.acquire_lease(job.id, "w1", 0.2, queue="train")
    jobs.transition(job.id, JobState.RUNNING, worker="w1")
    assert jobs.request_cancel(job.id).state == JobState.RUNNING  # w1 lives: it stops at its next step
    time.sleep(0.3)  # w1 dies
    cancelled = jobs.request_cancel(job.id)
    assert cancelled.state == JobState.CANCELLED and cancelled.finished_at is not None
    assert cancelled.result == {"run": f"runs/{job.id}"} and jobs.running_counts(["train"]) == {"train": 0}
