"""Jobs: submit (202 at once), status with progress, list and filter, cancel, logs, artefacts."""

from __future__ import annotations

import mimetypes
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from dermasynth.auth import ApiKey
from dermasynth.jobs import JobKind, JobNotFound, JobPage, JobRecord, JobState, LogPage, run_prefix
from dermasynth.jobs.params import JobRequest
from dermasynth.jobs.schemas import Artefact
from dermasynth.jobs.store import RedisJobStore
from dermasynth.jobs.submission import cancel_job, list_artefacts, submit_job
from dermasynth.storage import check_key
from services.gateway.deps import (
    DispatcherDep,
    EngineerKey,
    JobStoreDep,
    MetricsDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
)
from services.gateway.idempotency import IdempotencyDep, IdempotencyKeyHeader, fingerprint

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobIdPath = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="a job id (32 hex digits)")]
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the engineer scope"},
}
IN_MEMORY_LIMIT = 32 * 1024 * 1024
"""Artefacts up to this size are answered from memory; larger ones are spooled to disk and streamed."""
_FOUND: dict[int | str, dict[str, Any]] = {**_AUTH, 404: {"description": "no such job (or another owner's)"}}


def owned_job(jobs: RedisJobStore, job_id: str, key: ApiKey) -> JobRecord:
    """The job, if the key's owner (or an admin) may see it; another owner's job is reported missing (404)."""
    record = jobs.get(job_id)
    if not key.may_see(record.owner):
        raise JobNotFound(job_id)
    return record


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRecord,
    responses={
        **_AUTH,
        409: {"description": "a request with this Idempotency-Key is still being processed"},
        422: {"description": "invalid parameters, an unknown dataset/job, or an Idempotency-Key reused"},
        503: {"description": "the queue is unavailable"},
    },
    summary="Submit a synthesis, training, evaluation or experiment job",
)
def create_job(
    key: EngineerKey,
    jobs: JobStoreDep,
    dispatcher: DispatcherDep,
    registry: RegistryDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    store: StoreDep,
    idempotency: IdempotencyDep,
    request: Annotated[JobRequest, Body()],
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobRecord | JSONResponse:
    """Returns at once with the queued job; poll ``GET /v1/jobs/{id}`` for its progress. The job belongs to
    the key's owner; it may name only that owner's datasets and jobs, and only weights files under its own
    ``incoming/{owner}/`` prefix (``store:incoming/{owner}/<path>.pth``). With an ``Idempotency-Key``, a retry
    returns this same job instead of queueing another."""
    with idempotency.once(idempotency_key, key.id, "jobs", fingerprint(request.model_dump_json())) as slot:
        if slot.replay is not None:
            return slot.replay
        record = submit_job(
            request.kind,
            request.params,
            owner=key.owner,
            key_id=key.id,
            admin=key.admin,
            jobs=jobs,
            dispatcher=dispatcher,
            registry=registry,
            max_active=settings.max_active_jobs_per_owner,
            store=store,
        )
        metrics.jobs_submitted.labels(record.kind.value).inc()
        response.headers["Location"] = f"/v1/jobs/{record.id}"
        slot.save(status.HTTP_202_ACCEPTED, record.model_dump_json(), {"Location": response.headers["Location"]})
    return record


@router.get("", response_model=JobPage, responses=_AUTH, summary="Jobs, newest first, filtered by state and kind")
def list_jobs(
    key: EngineerKey,
    jobs: JobStoreDep,
    state: JobState | None = None,
    kind: JobKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobPage:
    """The key's owner's jobs (every owner's for admin keys), paged through the owner's index."""
    return jobs.list(state=state, kind=kind, limit=limit, offset=offset, owner=None if key.admin else key.owner)


@router.get(
    "/{job_id}",
    response_model=JobRecord,
    responses=_FOUND,
    summary="A job: state, progress (phase, epoch, step, metrics so far, ETA), error, results",
)
def get_job(key: EngineerKey, jobs: JobStoreDep, job_id: JobIdPath) -> JobRecord:
    return owned_job(jobs, job_id, key)


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRecord,
    responses={**_FOUND, 409: {"description": "the job has already finished"}},
    summary="Cancel a job; a running one stops at its next step and keeps its last checkpoint",
)
def cancel(
    key: EngineerKey, jobs: JobStoreDep, dispatcher: DispatcherDep, store: StoreDep, job_id: JobIdPath
) -> JobRecord:
    owned_job(jobs, job_id, key)
    return cancel_job(job_id, jobs, dispatcher, store)


@router.get(
    "/{job_id}/logs", response_model=LogPage, responses=_FOUND, summary="A job's log lines from line `since` on"
)
def logs(
    key: EngineerKey, jobs: JobStoreDep, job_id: JobIdPath, since: Annotated[int, Query(ge=0, le=2**53)] = 0
) -> LogPage:
    owned_job(jobs, job_id, key)
    return jobs.logs(job_id, since)


@router.get(
    "/{job_id}/artefacts",
    response_model=list[Artefact],
    responses=_FOUND,
    summary="The job's output files (checkpoints, metrics, figures, reports)",
)
def artefacts(
    key: EngineerKey, jobs: JobStoreDep, store: StoreDep, settings: SettingsDep, job_id: JobIdPath
) -> list[Artefact]:
    owned_job(jobs, job_id, key)
    return list_artefacts(store, job_id, url_expiry=timedelta(seconds=settings.artefact_url_ttl_s))


@router.get(
    "/{job_id}/artefacts/{path:path}",
    response_class=Response,
    responses={
        **_FOUND,
        200: {"content": {"application/octet-stream": {}}},
        422: {"description": "an invalid artefact path"},
    },
    summary="Download one output file of a job",
)
def download_artefact(
    caller: EngineerKey, jobs: JobStoreDep, store: StoreDep, job_id: JobIdPath, path: str
) -> Response:
    owned_job(jobs, job_id, caller)
    key = check_key(f"{run_prefix(job_id)}/{path}")
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if store.size(key) <= IN_MEMORY_LIMIT:
        return Response(store.get_bytes(key), media_type=media_type)
    fd, spooled = tempfile.mkstemp(prefix="dermasynth-artefact-")  # large checkpoints: stream from disk
    os.close(fd)
    store.get_file(key, Path(spooled))
    return FileResponse(
        spooled, media_type=media_type, filename=Path(path).name, background=BackgroundTask(os.unlink, spooled)
    )
