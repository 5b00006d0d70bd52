"""What every job task does around its work: idempotence, leases, state, progress, logs, cancel, retries.

A task calls :func:`run_job` with its job id and a body (``JobContext -> result dict``). Around the
body this module:

1. skips a job that has finished (its record is final or its completion marker exists);
2. takes the job's lease (and lists the job as running on its queue), or drops a duplicate message
   while another live worker holds it (if that worker dies, the sweeper re-sends the job); renews the
   lease from a heartbeat thread;
3. moves the job to ``running`` (attempts + 1) and validates its parameters again;
4. passes the body a progress callback that writes progress to the job store and raises
   :class:`~dermasynth.progress.Cancelled` once a user asked to cancel;
5. writes ``runs/{job_id}/_COMPLETE.json`` last, then marks the job succeeded; or marks it cancelled
   (its last checkpoint stays), failed with its error, or queued again for a retry after a transient
   storage/network error (Celery's exponential backoff with full jitter:
   ``DERMASYNTH_JOB_RETRY_BACKOFF_S`` doubling up to ``DERMASYNTH_JOB_RETRY_BACKOFF_MAX_S``, at most
   ``DERMASYNTH_JOB_MAX_RETRIES`` times);
6. hands the job back to its queue when the worker is shutting down (SIGTERM, see
   :mod:`services.worker.shutdown`).

Jobs whose worker died are found by the sweeper (:mod:`services.worker.sweeper`), not here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from pydantic import BaseModel

from dermasynth.classifier import store_weights
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import InvalidTransition, JobNotFound, JobRecord, JobState, run_prefix
from dermasynth.jobs.params import parse_params
from dermasynth.jobs.store import ALIVE_S, JobStore
from dermasynth.jobs.submission import COMPLETION_MARKER
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import ObjectStore, PrefixedStore
from services.worker.failures import describe, is_transient
from services.worker.metrics import IMAGES_PER_SECOND, JOB_OUTCOMES, JOB_SECONDS
from services.worker.resources import WorkerResources, worker_resources
from services.worker.shutdown import SHUTDOWN, HandBack

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
HAND_BACK_DELAY_S = 5.0
"""A job being handed back is left to the sweepers if its worker has not re-sent it within this."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LeaseLost(Exception):
    """Another worker took the job over (this one stalled past its lease); stop without touching its state."""


class Heartbeat:
    """Renews the job's lease (and its alive mark) from a daemon thread, every third of the shorter of the
    lease and :data:`~dermasynth.jobs.store.ALIVE_S` (5 s with the defaults)."""

    def __init__(self, jobs: JobStore, job_id: str, owner: str, lease_s: float, queue: str) -> None:
        self.jobs, self.job_id, self.owner, self.lease_s, self.queue = jobs, job_id, owner, lease_s, queue
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(min(self.lease_s, ALIVE_S) / 3):
            try:
                if not self.jobs.renew_lease(self.job_id, self.owner, self.lease_s, queue=self.queue):
                    self.lost = True
                    return
            except Exception:  # Redis hiccup: try again at the next beat, the lease has slack
                logger.warning("job %s: could not renew the lease", self.job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ProgressReporter:
    """The progress callback handed to engines: stores progress (throttled), checks the cancel flag, and
    stops the job for a hand-back when the worker shuts down. A Redis outage (a restart) does not stop
    the job: progress is skipped until Redis answers again, and the lease has slack for it."""

    def __init__(self, jobs: JobStore, job_id: str, heartbeat: Heartbeat, kind: str = "") -> None:
        self.jobs, self.job_id, self.heartbeat, self.kind = jobs, job_id, heartbeat, kind
        self._last_write = 0.0
        self._last_key: tuple[str, int | None] | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.images_per_s is not None:
            IMAGES_PER_SECOND.labels(self.kind).set(progress.images_per_s)
        key = (progress.phase, progress.epoch)
        if key != self._last_key:
            logger.info("%s", _describe_progress(progress))
        if SHUTDOWN.should_hand_back(progress):
            raise HandBack(f"job {self.job_id}: the worker is shutting down; handing the job back")
        if key != self._last_key or now - self._last_write >= PROGRESS_INTERVAL_S:
            self._last_write, self._last_key = now, key
            try:
                self.jobs.set_progress(self.job_id, progress)
                cancelled = self.jobs.cancel_requested(self.job_id)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning("job %s: progress not stored, Redis does not answer (%s)", self.job_id, exc)
                return
            if cancelled:
                raise Cancelled(f"job {self.job_id} was cancelled by a user")
            if self.heartbeat.lost:
                raise LeaseLost(f"job {self.job_id}: another worker holds the lease now")


def _describe_progress(progress: Progress) -> str:
    """One log line for a new phase or epoch: where the job is and its numbers so far (never data)."""
    parts = [f"phase {progress.phase}"]
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch}" + (f"/{progress.total_epochs}" if progress.total_epochs else ""))
    if progress.metrics:
        parts.append(
            ", ".join(
                f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                for name, value in sorted(progress.metrics.items())
            )
        )
    if progress.message:
        parts.append(progress.message)
    return "; ".join(parts)


class JobLogHandler(logging.Handler):
    """Copies log records of the job's thread into the job's log (messages only, never data)."""

    def __init__(self, jobs: JobStore, job_id: str) -> None:
        super().__init__(logging.INFO)
        self.jobs, self.job_id = jobs, job_id
        self.thread = threading.get_ident()
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.jobs.append_log(self.job_id, self.format(record))
        except (redis.ConnectionError, redis.TimeoutError):  # Redis restarting: the worker's own log has it
            pass
        except Exception:  # a log line must never fail the job
            self.handleError(record)


@contextmanager
def job_logs(jobs: JobStore, job_id: str) -> Iterator[None]:
    """Send the library's and the worker's log records to the job's log while the job runs."""
    handler = JobLogHandler(jobs, job_id)
    loggers = [logging.getLogger("dermasynth"), logging.getLogger("services.worker")]
    for each in loggers:
        each.addHandler(handler)
        if each.getEffectiveLevel() > logging.INFO:
            each.setLevel(logging.INFO)
    try:
        yield
    finally:
        for each in loggers:
            each.removeHandler(handler)


@dataclass
class JobContext:
    """What a job body works with."""

    record: JobRecord
    params: BaseModel
    resources: WorkerResources
    progress: Callable[[Progress], None]
    _datasets: dict[str, Manifest] = field(default_factory=dict)

    @property
    def store(self) -> ObjectStore:
        return self.resources.store

    @property
    def jobs(self) -> JobStore:
        return self.resources.jobs

    @property
    def out(self) -> PrefixedStore:
        """The job's own outputs: ``runs/{job_id}/``."""
        return PrefixedStore(self.store, run_prefix(self.record.id))

    def dataset(self, dataset_id: str) -> Manifest:
        """A published dataset as a local folder (downloaded once per worker, sha-checked)."""
        if dataset_id not in self._datasets:
            logger.info("fetching dataset %s", dataset_id)
            self._datasets[dataset_id] = self.resources.registry.fetch(dataset_id)
            logger.info("dataset %s: %d images", dataset_id, len(self._datasets[dataset_id]))
        return self._datasets[dataset_id]

    def fetch_weights(self, weights: str | None) -> None:
        """Download ``store:`` weights of the job's owner into the worker's cache, where training loads them
        (``weights_only=True``); torchvision names and None need nothing.

        Raises:
            WeightsRefused: another owner's prefix, a missing object or one over the size limit.
        """
        if weights is not None and store_weights.is_store_reference(weights):
            logger.info("fetching weights %s", weights)
            store_weights.fetch(self.store, weights, self.record.owner, self.resources.settings.cache_root)


JobBody = Callable[[JobContext], dict[str, Any]]


def worker_name(task: Task) -> str:
    """``hostname:pid`` of this worker process (the lease owner)."""
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"


def run_job(task: Task, job_id: str, body: JobBody) -> None:
    """Run one job's body with everything listed in the module docstring.

    Raises:
        celery.exceptions.Retry: to run the job again later (lease held elsewhere, transient error).
    """
    try:
        resources = worker_resources()
        record = resources.jobs.get(job_id)
        if record.terminal:
            logger.info("job %s is already %s; not running it again", job_id, record.state.value)
            return
        marker = f"{run_prefix(job_id)}/{COMPLETION_MARKER}"
        if resources.store.exists(marker):
            result = json.loads(resources.store.get_bytes(marker))
            if record.state == JobState.QUEUED:  # it ran to the end before (e.g. requeued after the marker was written)
                resources.jobs.transition(job_id, JobState.RUNNING, worker=worker_name(task))
            resources.jobs.transition(job_id, JobState.SUCCEEDED, result=result)
            logger.info("job %s had finished (completion marker found); marked succeeded", job_id)
            return
    except JobNotFound:
        logger.warning("job %s is not in the job store (expired or from another deployment); dropping it", job_id)
        return
    except Exception as exc:
        if not _may_retry(task, exc):
            _fail_if_possible(job_id, exc)
            raise
        raise _retry(task, job_id, exc) from exc
    owner = worker_name(task)
    lease_s = resources.settings.job_lease_s
    if not resources.jobs.acquire_lease(job_id, owner, lease_s, queue=record.queue):
        # a duplicate message (a re-send, the broker's backstop redelivery): the live holder runs the job,
        # and if it dies the sweeper re-sends it
        holder = resources.jobs.lease_holder(job_id) or "(gone meanwhile)"
        logger.info("job %s is held by live worker %s; dropping this duplicate message", job_id, holder)
        return
    started = time.monotonic()
    outcome = "failed"
    SHUTDOWN.on_deadline(lambda: _abandon(resources, job_id, owner, record.queue))
    try:
        outcome = _run_held(task, record, body, resources, owner, marker)
    finally:
        SHUTDOWN.on_deadline(None)
        resources.jobs.release_lease(job_id, owner, queue=record.queue)
        JOB_OUTCOMES.labels(record.kind.value, outcome).inc()
        JOB_SECONDS.labels(record.kind.value).observe(time.monotonic() - started)


def retry_delay(task: Task, retries: int) -> int:
    """Celery's exponential backoff with full jitter, from the task's ``retry_backoff*`` options."""
    return int(
        get_exponential_backoff_interval(
            factor=int(task.retry_backoff),
            retries=retries,
            maximum=int(task.retry_backoff_max),
            full_jitter=bool(task.retry_jitter),
        )
    )


def _may_retry(task: Task, exc: Exception) -> bool:
    """Whether ``exc`` is transient and retries are left."""
    return is_transient(exc) and task.request.retries < worker_resources().settings.job_max_retries


def _retry(task: Task, job_id: str, exc: Exception) -> Exception:
    """Send the job's retry (after Celery's backoff); the :class:`celery.exceptions.Retry` to raise."""
    retries, allowed = task.request.retries, worker_resources().settings.job_max_retries
    delay = retry_delay(task, retries)
    logger.warning(
        "job %s: transient error (%s); retry %d/%d in %d s", job_id, describe(exc), retries + 1, allowed, delay
    )
    return task.retry(exc=exc, countdown=delay, throw=False)


def send_job(task: Task, record: JobRecord) -> None:
    """Put the job's message on its queue again (a new message; the job id stays the task id)."""
    task.app.send_task(task.name, args=(record.id,), task_id=record.id, queue=record.queue)


def _hand_back(task: Task, resources: WorkerResources, record: JobRecord, owner: str) -> None:
    """Queue the job again for another worker; if this process dies half-way, a sweeper finishes it."""
    jobs = resources.jobs
    jobs.transition(record.id, JobState.QUEUED)
    claim = jobs.abandon_lease(record.id, owner, queue=record.queue, delay_s=HAND_BACK_DELAY_S)
    send_job(task, record)
    if claim is not None:
        jobs.unclaim(claim)
    logger.warning("job %s handed back to the %s queue (worker shutting down)", record.id, record.queue)


def _abandon(resources: WorkerResources, job_id: str, owner: str, queue: str) -> None:
    """The shutdown watchdog's last act: give the lease up so that a sweeper re-sends the job at once."""
    resources.jobs.abandon_lease(job_id, owner, queue=queue)
    logger.error("job %s abandoned at the end of the grace period; a sweeper re-sends it", job_id)


def _settle(jobs: JobStore, job_id: str, to: JobState, **changes: Any) -> None:
    """Move the job to a final state unless it got there meanwhile (e.g. cancelled while its lease lapsed)."""
    try:
        jobs.transition(job_id, to, **changes)
    except InvalidTransition:
        logger.warning("job %s: already %s; not marking it %s", job_id, jobs.get(job_id).state.value, to.value)


def _fail_if_possible(job_id: str, exc: Exception) -> None:
    """Record a failure that happened before the job started, if the job store can be reached."""
    try:
        worker_resources().jobs.transition(job_id, JobState.FAILED, error=describe(exc))
    except Exception:
        logger.exception("job %s: could not record its failure (%s)", job_id, describe(exc))


def _run_held(task: Task, record: JobRecord, body: JobBody, resources: WorkerResources, owner: str, marker: str) -> str:
    """The part of :func:`run_job` done while holding the lease; returns the outcome for the metrics."""
    jobs, settings, job_id = resources.jobs, resources.settings, record.id
    if jobs.cancel_requested(job_id):
        _settle(jobs, job_id, JobState.CANCELLED)
        return "cancelled"
    try:
        record = jobs.transition(job_id, JobState.RUNNING, worker=owner)
    except InvalidTransition:  # cancelled (or failed) between the checks above and now
        logger.info("job %s ended before it started here (%s)", job_id, jobs.get(job_id).state.value)
        return "cancelled"
    with (
        job_logs(jobs, job_id),
        Heartbeat(jobs, job_id, owner, settings.job_lease_s, record.queue) as heartbeat,
    ):
        logger.info("job %s (%s) attempt %d on %s", job_id, record.kind.value, record.attempts, owner)
        try:
            params = parse_params(record.kind, record.params)
            context = JobContext(
                record, params, resources, ProgressReporter(jobs, job_id, heartbeat, record.kind.value)
            )
            result = body(context)
            resources.store.put_bytes(marker, json.dumps(result, indent=2).encode(), "application/json")
            _settle(jobs, job_id, JobState.SUCCEEDED, result=result)
            logger.info("job %s succeeded", job_id)
            return "succeeded"
        except HandBack:
            _hand_back(task, resources, record, owner)
            return "handed_back"
        except Cancelled:
            _settle(jobs, job_id, JobState.CANCELLED, result={"run": run_prefix(job_id)})
            logger.info("job %s cancelled; its last checkpoint is kept under %s/", job_id, run_prefix(job_id))
            return "cancelled"
        except LeaseLost:
            logger.warning("job %s: lease lost to another worker; stopping this copy", job_id)
            return "lease_lost"
        except Exception as exc:
            if _may_retry(task, exc):
                jobs.transition(job_id, JobState.QUEUED)  # before the retry's message can reach a worker
                jobs.release_lease(job_id, owner, queue=record.queue)
                raise _retry(task, job_id, exc) from exc
            logger.exception("job %s failed: %s", job_id, describe(exc))
            _settle(jobs, job_id, JobState.FAILED, error=describe(exc))
            return "failed"
