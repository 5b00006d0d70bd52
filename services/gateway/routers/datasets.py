"""Datasets: upload a zip, register a prefix already in the store, list, describe.

Upload and register answer 202 with an ``ingest`` job (``default`` queue): the gateway checks only what
needs no import (key, body limits, the zip's directory, prefix ownership and sizes, quotas), stores the
upload under ``incoming/{owner}/uploads/{job_id}.zip`` and queues the job; a worker does the import.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from dermasynth.auth import ApiKey
from dermasynth.config import Settings
from dermasynth.data.archives import inspect_archive
from dermasynth.data.catalog import DatasetCatalog, DatasetNotFound
from dermasynth.data.importer import REPORT_NAME
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.data.uploads import INCOMING_PREFIX, IngestOptions, check_store_prefix, ingest_options, upload_key
from dermasynth.jobs import JobKind, JobRecord, RedisJobStore
from dermasynth.jobs.params import IngestParams
from dermasynth.jobs.queues import CeleryDispatcher
from dermasynth.jobs.submission import check_job_quota, check_storage_quota, new_job_id, submit_job
from dermasynth.storage import ObjectNotFound, ObjectStore
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
from services.gateway.metrics import GatewayMetrics

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Format = Literal["auto", "ham10000", "isic-csv", "imagefolder", "manifest"]
DatasetIdPath = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,79}$", description="a dataset id")]

_COPY_CHUNK = 1 << 20
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the engineer scope"},
    409: {"description": "a request with this Idempotency-Key is still being processed"},
    413: {"description": "the upload is larger than the limits (bytes, files, expanded size)"},
    422: {"description": "not a zip, unsafe paths, bad options, a reused key"},
    429: {"description": "the owner is at its storage or job quota"},
}


class RegisterRequest(BaseModel):
    """A dataset that already lies in the object store, in any supported layout."""

    prefix: str = Field(
        min_length=1,
        max_length=500,
        description=f"store prefix holding the dataset, under the owner's own '{INCOMING_PREFIX}/{{owner}}/', "
        f"e.g. '{INCOMING_PREFIX}/derm-lab/ham10000'",
    )
    name: str = Field(min_length=1, max_length=100)
    format: Format = "auto"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    val_frac: float = Field(default=0.15, ge=0, le=0.5)
    test_frac: float = Field(default=0.15, ge=0, le=0.5)


def owned_dataset(registry: DatasetCatalog, dataset_id: str, key: ApiKey) -> DatasetInfo:
    """The dataset, if the key's owner (or an admin) may see it; another owner's is reported missing (404)."""
    info = registry.get(dataset_id)
    if not key.may_see(info.owner):
        raise DatasetNotFound(dataset_id)
    return info


def _options(settings: Settings, fmt: str, seed: int, val_frac: float, test_frac: float, owner: str) -> IngestOptions:
    try:
        return ingest_options(settings, fmt=fmt, seed=seed, val_frac=val_frac, test_frac=test_frac, owner=owner)
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"val_frac {val_frac} and test_frac {test_frac} leave no training share: {exc.errors()[0]['msg']}",
        ) from None


def _queue(
    params: IngestParams,
    key: ApiKey,
    job_id: str,
    *,
    jobs: RedisJobStore,
    dispatcher: CeleryDispatcher,
    registry: DatasetCatalog,
    metrics: GatewayMetrics,
    settings: Settings,
) -> JobRecord:
    """Queue the ingest job ``job_id`` for the key's owner (within its job quota)."""
    record = submit_job(
        JobKind.INGEST,
        params,
        owner=key.owner,
        key_id=key.id,
        admin=key.admin,
        jobs=jobs,
        dispatcher=dispatcher,
        registry=registry,
        max_active=settings.max_active_jobs_per_owner,
        job_id=job_id,
    )
    metrics.jobs_submitted.labels(record.kind.value).inc()
    return record


def _store_upload(store: ObjectStore, key: str, upload: BinaryIO) -> None:
    """Copy the received upload into the store (through a temporary file: stores take a path)."""
    upload.seek(0)
    with tempfile.NamedTemporaryFile(prefix="dermasynth-upload-", suffix=".zip") as copy:
        shutil.copyfileobj(upload, copy, _COPY_CHUNK)
        copy.flush()
        store.put_file(key, Path(copy.name))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRecord,
    responses={**_ERRORS, 503: {"description": "the queue is unavailable"}},
    summary="Upload a dataset as a zip (HAM10000, ISIC CSV, ImageFolder or DermaSynth manifest layout); "
    "an ingest job imports it",
)
def upload_dataset(
    key: EngineerKey,
    registry: RegistryDep,
    store: StoreDep,
    jobs: JobStoreDep,
    dispatcher: DispatcherDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
    response: Response,
    file: Annotated[UploadFile, File(description="a .zip of the dataset folder")],
    name: Annotated[str, Form(min_length=1, max_length=100)],
    format: Annotated[Format, Form()] = "auto",
    seed: Annotated[int, Form(ge=0, le=2**32 - 1)] = 0,
    val_frac: Annotated[float, Form(ge=0, le=0.5)] = 0.15,
    test_frac: Annotated[float, Form(ge=0, le=0.5)] = 0.15,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobRecord | JSONResponse:
    """Answers 202 with the queued ``ingest`` job (``Location: /v1/jobs/{id}``). Refused at once: a file that
    is not a zip, or whose directory breaks a limit (entries, unsafe paths, encryption, declared size), and
    an owner at its storage or job quota. The job decodes and checks every file, stores accepted images
    without metadata and publishes the dataset; its result names the dataset and the report's counts
    (``GET /v1/datasets/{id}/report`` has every rejected file with its reason). A failed import (no image
    accepted, a member that cannot be extracted, the quota) ends the job ``failed`` with the reason, and
    nothing is kept. With an ``Idempotency-Key``, a retry returns this same job instead of queueing another."""
    options = _options(settings, format, seed, val_frac, test_frac, key.owner)
    form = json.dumps([name, format, seed, val_frac, test_frac])
    print_ = fingerprint(form, stream=file.file) if idempotency_key is not None else ""
    with idempotency.once(idempotency_key, key.id, "datasets", print_) as slot:
        if slot.replay is not None:
            return slot.replay
        check_storage_quota(registry, settings.max_stored_bytes_per_owner, key.owner, file.size or 0)
        check_job_quota(jobs, key.owner, settings.max_active_jobs_per_owner)  # before the zip is stored
        inspect_archive(file.file, options.limits)
        job_id = new_job_id()
        location = upload_key(key.owner, job_id)
        params = IngestParams(
            source="upload",
            location=location,
            name=name,
            format=format,
            seed=seed,
            val_frac=val_frac,
            test_frac=test_frac,
        )
        _store_upload(store, location, file.file)
        try:
            record = _queue(
                params,
                key,
                job_id,
                jobs=jobs,
                dispatcher=dispatcher,
                registry=registry,
                metrics=metrics,
                settings=settings,
            )
        except Exception:
            store.delete(location)  # no job will ever read it
            raise
        response.headers["Location"] = f"/v1/jobs/{record.id}"
        slot.save(status.HTTP_202_ACCEPTED, record.model_dump_json(), {"Location": response.headers["Location"]})
    return record


@router.post(
    "/register",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRecord,
    responses={**_ERRORS, 503: {"description": "the queue is unavailable"}},
    summary="Import a dataset already in the object store under the owner's incoming/{owner}/ prefix (an ingest job)",
)
def register_dataset(
    key: EngineerKey,
    registry: RegistryDep,
    store: StoreDep,
    jobs: JobStoreDep,
    dispatcher: DispatcherDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    response: Response,
    body: RegisterRequest,
) -> JobRecord:
    """Only a folder under the owner's own ``incoming/{owner}/`` prefix; its listing and sizes are checked
    at once (403 for another prefix, 413 over the limits, 422 for an empty one) and nothing is downloaded
    here. Answers 202 with the queued ``ingest`` job, which downloads, checks and publishes the dataset."""
    options = _options(settings, body.format, body.seed, body.val_frac, body.test_frac, key.owner)
    prefix, _, nbytes = check_store_prefix(store, body.prefix, key.owner, options.limits)
    check_storage_quota(registry, settings.max_stored_bytes_per_owner, key.owner, nbytes)
    params = IngestParams(
        source="store",
        location=prefix,
        name=body.name,
        format=body.format,
        seed=body.seed,
        val_frac=body.val_frac,
        test_frac=body.test_frac,
    )
    record = _queue(
        params,
        key,
        new_job_id(),
        jobs=jobs,
        dispatcher=dispatcher,
        registry=registry,
        metrics=metrics,
        settings=settings,
    )
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return record


@router.get("", response_model=list[DatasetInfo], summary="All datasets, newest first")
def list_datasets(key: EngineerKey, registry: RegistryDep) -> list[DatasetInfo]:
    """The key's owner's datasets (read through the owner's index); every owner's for admin keys."""
    return registry.list(None if key.admin else key.owner)


@router.get(
    "/{dataset_id}",
    response_model=DatasetInfo,
    responses={404: {"description": "no such dataset"}},
    summary="One dataset with its class, split and source distribution",
)
def get_dataset(key: EngineerKey, registry: RegistryDep, dataset_id: DatasetIdPath) -> DatasetInfo:
    return owned_dataset(registry, dataset_id, key)


@router.get(
    "/{dataset_id}/report",
    response_model=ImportReport,
    responses={404: {"description": "no such dataset, or it was not imported (a synthesis output)"}},
    summary="The per-file import report of an uploaded or registered dataset",
)
def get_import_report(
    key: EngineerKey, registry: RegistryDep, store: StoreDep, dataset_id: DatasetIdPath
) -> ImportReport:
    owned_dataset(registry, dataset_id, key)
    try:
        return ImportReport.model_validate_json(store.get_bytes(f"{registry.prefix(dataset_id)}/{REPORT_NAME}"))
    except ObjectNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} has no import report (it was made by a job, not imported)"
        ) from None
