"""Submitting, cancelling and inspecting jobs: the logic behind the gateway's jobs routes and the CLI."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Protocol

from pydantic import BaseModel

from dermasynth.classifier import store_weights
from dermasynth.classifier.config import TrainConfig
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.gan.synthesis import SynthesisPlan
from dermasynth.jobs.params import check_synthesis_budget
from dermasynth.jobs.queues import QUEUE_OF
from dermasynth.jobs.records import JobKind, JobRecord, JobState, run_prefix
from dermasynth.jobs.schemas import Artefact
from dermasynth.jobs.store import JobNotFound, JobStore
from dermasynth.storage.base import ObjectStore

logger = logging.getLogger(__name__)

COMPLETION_MARKER = "_COMPLETE.json"
"""Written last under ``runs/{job_id}/``: a job whose marker exists has finished and is not run again."""


class JobDispatcher(Protocol):
    """Puts jobs on their queue and takes them off (see :class:`~dermasynth.jobs.queues.CeleryDispatcher`)."""

    def submit(self, record: JobRecord) -> None:
        """Enqueue the job."""

    def revoke(self, job_id: str) -> None:
        """Drop the job's message if no worker started it."""


class UnknownReference(ValueError):
    """Parameters that name a dataset or job that does not exist (or cannot serve)."""


class OverBudget(ValueError):
    """Parameters that are valid alone but make too much work for the dataset they name."""


class QuotaExceeded(RuntimeError):
    """The owner is at its quota (jobs or stored bytes)."""


class QueueUnavailable(RuntimeError):
    """The broker could not take the job; the job is recorded as failed with the reason."""


def check_job_quota(jobs: JobStore, owner: str, max_active: int | None) -> None:
    """Refuse another job of ``owner`` when it has ``max_active`` queued or running (None: no quota).

    Raises:
        QuotaExceeded: naming the jobs active and the quota.
    """
    if max_active is not None and (active := jobs.active_jobs(owner)) >= max_active:
        raise QuotaExceeded(
            f"owner {owner!r} has {active} jobs queued or running, its quota is {max_active} "
            "(DERMASYNTH_MAX_ACTIVE_JOBS_PER_OWNER); wait for one to finish or cancel one"
        )


def check_storage_quota(registry: DatasetCatalog, quota: int, owner: str, incoming: int) -> None:
    """Refuse ``incoming`` more bytes of datasets for ``owner`` past its ``quota``
    (``DERMASYNTH_MAX_STORED_BYTES_PER_OWNER``); checked when an ingest is submitted and again when it runs.

    Raises:
        QuotaExceeded: naming the bytes kept, the bytes asked for and the quota.
    """
    used = registry.stored_bytes(owner)
    if used + incoming > quota:
        raise QuotaExceeded(
            f"owner {owner!r} keeps {used} bytes of datasets; {incoming} more would pass its quota of "
            f"{quota} (DERMASYNTH_MAX_STORED_BYTES_PER_OWNER)"
        )


def check_references(params: BaseModel, jobs: JobStore, registry: DatasetCatalog, *, owner: str | None = None) -> None:
    """Make sure every dataset and job the parameters name exists, can serve and belongs to ``owner``
    (None: any owner, for admin keys).

    Raises:
        UnknownReference: naming the missing dataset or unusable job (another owner's counts as missing).
        OverBudget: the synthesis plan makes too many images for the dataset.
    """
    dataset_id = getattr(params, "dataset_id", None)
    if dataset_id is not None and (
        not registry.exists(dataset_id) or (owner is not None and registry.get(dataset_id).owner != owner)
    ):
        raise UnknownReference(
            f"dataset {dataset_id!r} is not published; upload or register it first "
            "(GET /v1/datasets lists the datasets)"
        )
    plan = getattr(params, "plan", None) or getattr(getattr(params, "config", None), "synthesis", None)
    if dataset_id is not None and isinstance(plan, SynthesisPlan):
        train = registry.get(dataset_id).stats.splits.get("train", {})
        try:
            check_synthesis_budget(plan, train)
        except ValueError as exc:
            raise OverBudget(str(exc)) from None
    training_job_id = getattr(params, "training_job_id", None)
    if training_job_id is not None:
        try:
            training = jobs.get(training_job_id)
        except JobNotFound:
            raise UnknownReference(f"training_job_id {training_job_id!r}: no such job") from None
        if owner is not None and training.owner != owner:
            raise UnknownReference(f"training_job_id {training_job_id!r}: no such job")
        if training.kind != JobKind.TRAINING or training.state != JobState.SUCCEEDED:
            raise UnknownReference(
                f"training_job_id {training_job_id!r} is a {training.state.value} "
                f"{training.kind.value} job; a succeeded training job is needed"
            )


def new_job_id() -> str:
    """A fresh job id (32 hex digits)."""
    return uuid.uuid4().hex


def weights_of(params: BaseModel) -> str | None:
    """The starting weights a training or experiment job names (None for other kinds, or from scratch)."""
    config = getattr(params, "config", None)
    train = config if isinstance(config, TrainConfig) else getattr(config, "train", None)
    return train.weights if isinstance(train, TrainConfig) else None


def check_weights(params: BaseModel, store: ObjectStore | None, owner: str) -> None:
    """Make sure ``store:`` weights the parameters name are ``owner``'s own, present and small enough.

    Raises:
        UnknownReference: the reference is another owner's, missing or too large (the message says what is
            accepted), or there is no store to look in.
    """
    weights = weights_of(params)
    if weights is None or not store_weights.is_store_reference(weights):
        return
    if store is None:
        raise UnknownReference(f"weights {weights!r} name the object store, which this submission cannot reach")
    try:
        store_weights.check_stored(store, weights, owner)
    except store_weights.WeightsRefused as exc:
        raise UnknownReference(str(exc)) from None


def submit_job(
    kind: JobKind,
    params: BaseModel,
    *,
    owner: str,
    jobs: JobStore,
    dispatcher: JobDispatcher,
    registry: DatasetCatalog,
    key_id: str = "",
    admin: bool = False,
    max_active: int | None = None,
    store: ObjectStore | None = None,
    job_id: str | None = None,
) -> JobRecord:
    """Record a queued job of ``owner`` and put it on its queue; never waits for it to run.

    Args:
        admin: the caller may name any owner's datasets and jobs.
        max_active: the owner's quota of queued and running jobs (None: no quota).
        store: where ``store:`` weights are looked up; they must lie under ``incoming/{owner}/`` (admins'
            jobs included: a job's weights are its own owner's).
        job_id: the job's id when the caller made it beforehand (an ingest job's upload is stored under
            it before the job is queued); None: a new one.

    Raises:
        UnknownReference: the parameters name something that does not exist (or is another owner's).
        QuotaExceeded: the owner already has ``max_active`` jobs queued or running.
        QueueUnavailable: the broker refused the message (the job is then recorded as failed).
    """
    check_references(params, jobs, registry, owner=None if admin else owner)
    check_weights(params, store, owner)
    check_job_quota(jobs, owner, max_active)
    record = jobs.create(
        JobRecord(
            id=job_id or new_job_id(),
            kind=kind,
            queue=QUEUE_OF[kind],
            params=params.model_dump(mode="json"),
            owner=owner,
            key_id=key_id,
        )
    )
    try:
        dispatcher.submit(record)
    except Exception as exc:  # any broker failure: the job must not stay queued forever
        jobs.transition(record.id, JobState.FAILED, error=f"could not enqueue the job: {exc}")
        raise QueueUnavailable(f"the job queue is unavailable ({exc}); job {record.id} was not queued") from exc
    logger.info("job %s (%s) queued on %s by key %s", record.id, kind.value, record.queue, owner)
    return record


def cancel_job(job_id: str, jobs: JobStore, dispatcher: JobDispatcher, store: ObjectStore | None = None) -> JobRecord:
    """Cancel a job: a queued one at once; a running one stops at its next step, keeping its last checkpoint.

    A queued ingest job cancelled here never reaches a worker, so its uploaded zip is deleted here (from
    ``store``, when given); a running one deletes its own when it stops.

    Raises:
        JobNotFound: no such job.
        InvalidTransition: the job has already finished.
    """
    record = jobs.request_cancel(job_id)
    try:
        dispatcher.revoke(job_id)
    except Exception:  # revoking is an optimisation: the cancel flag alone stops the job
        logger.warning(
            "could not broadcast the revoke of job %s; its cancel flag still stops it", job_id, exc_info=True
        )
    upload = record.params.get("location") if record.params.get("source") == "upload" else None
    if store is not None and record.kind == JobKind.INGEST and record.state == JobState.CANCELLED and upload:
        store.delete(str(upload))  # no worker will read it
    logger.info("job %s: cancel requested (%s)", job_id, record.state.value)
    return record


def list_artefacts(store: ObjectStore, job_id: str, *, url_expiry: timedelta = timedelta(minutes=5)) -> list[Artefact]:
    """The files under ``runs/{job_id}/``, with short-lived direct URLs where the store can sign them
    (signed with the service's own store credentials; ``DERMASYNTH_ARTEFACT_URL_TTL_S``)."""
    prefix = f"{run_prefix(job_id)}/"
    return [
        Artefact(path=key[len(prefix) :], size=store.size(key), url=store.presigned_url(key, url_expiry))
        for key in store.list(prefix)
    ]
