"""Ingest jobs: an uploaded zip, or a folder under the owner's ``incoming/{owner}/``, imported as a dataset.

``POST /v1/datasets`` and ``POST /v1/datasets/register`` check what needs no download, store the upload
under ``incoming/{owner}/uploads/{job_id}.zip`` and queue this job on the ``default`` queue; the import
(every image decoded, metadata removed, lesion-grouped split, publish) runs here, never in the gateway.

The job is idempotent: the dataset id is derived from the job id (:func:`ingested_dataset_id`) and the
catalog entry is written last, so a redelivered job finds its dataset and publishes nothing twice. The
uploaded zip is deleted once the job succeeds or fails for good (not before a retry of a transient error).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from celery import Task

from dermasynth.data.archives import ArchiveRejected
from dermasynth.data.importer import REPORT_NAME
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.data.uploads import (
    NothingAccepted,
    check_store_prefix,
    ingest_archive,
    ingest_options,
    ingest_store_prefix,
    ingested_dataset_id,
    upload_key,
)
from dermasynth.jobs import JobKind
from dermasynth.jobs.params import IngestParams
from dermasynth.jobs.queues import TASK_NAMES
from dermasynth.jobs.submission import check_storage_quota
from dermasynth.progress import Progress
from services.worker.celery_app import JOB_TASK_OPTIONS, app
from services.worker.failures import is_transient
from services.worker.runtime import JobContext, run_job

FAILED_REPORT = "import_report.json"
"""Written under ``runs/{job_id}/`` when no image was accepted: the per-file reasons of the failed import."""


def result_of(info: DatasetInfo, report: ImportReport) -> dict[str, Any]:
    """The job's result: the dataset, the report's counts, and where the full report is."""
    return {
        "dataset_id": info.id,
        "dataset": info.model_dump(mode="json"),
        "report_url": f"/v1/datasets/{info.id}/report",
        "format": report.format,
        "files_seen": report.files_seen,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "rejected_by_reason": report.rejected_by_reason,
    }


def ingest(ctx: JobContext) -> dict[str, Any]:
    """Import the job's zip or store prefix and publish it as dataset ``ds-{job_id}``."""
    params = ctx.params
    assert isinstance(params, IngestParams)
    owner, job_id = ctx.record.owner, ctx.record.id
    registry, store = ctx.resources.registry, ctx.store
    dataset_id = ingested_dataset_id(job_id)
    upload = upload_key(owner, job_id) if params.source == "upload" else None
    try:
        if registry.exists(dataset_id):  # a redelivered job: its dataset is already published
            info = registry.get(dataset_id)
            report = ImportReport.model_validate_json(store.get_bytes(f"{registry.prefix(dataset_id)}/{REPORT_NAME}"))
        else:
            info, report = _import(ctx, params, dataset_id, upload)
    except Exception as exc:
        if upload is not None and not is_transient(exc):
            store.delete(upload)  # failed for good: no orphan bytes
        raise
    if upload is not None:
        store.delete(upload)
    return result_of(info, report)


def _import(
    ctx: JobContext, params: IngestParams, dataset_id: str, upload: str | None
) -> tuple[DatasetInfo, ImportReport]:
    owner, job_id = ctx.record.owner, ctx.record.id
    registry, store, settings = ctx.resources.registry, ctx.store, ctx.resources.settings
    options = ingest_options(
        settings, fmt=params.format, seed=params.seed, val_frac=params.val_frac, test_frac=params.test_frac, owner=owner
    )
    try:
        if upload is not None:
            if params.location != upload:
                raise ArchiveRejected(
                    "forbidden_prefix", f"an upload job reads only its own zip {upload!r}, not {params.location!r}"
                )
            check_storage_quota(registry, settings.max_stored_bytes_per_owner, owner, store.size(upload))
            ctx.progress(
                Progress(phase="ingest", message=f"unpacking and validating the uploaded zip of {params.name!r}")
            )
            with tempfile.TemporaryDirectory(prefix="dermasynth-ingest-") as work:
                archive = Path(work) / "upload.zip"
                store.get_file(upload, archive)
                return ingest_archive(
                    registry, archive, name=params.name, options=options, dataset_id=dataset_id, job_id=job_id
                )
        checked = check_store_prefix(store, params.location, owner, options.limits)
        check_storage_quota(registry, settings.max_stored_bytes_per_owner, owner, checked.nbytes)
        objects = f"{len(checked.keys)} objects of {checked.prefix}"
        ctx.progress(Progress(phase="ingest", message=f"downloading and validating {objects}"))
        return ingest_store_prefix(
            registry, store, checked, name=params.name, options=options, dataset_id=dataset_id, job_id=job_id
        )
    except NothingAccepted as exc:  # keep the per-file reasons where the user can read them
        ctx.out.put_bytes(FAILED_REPORT, exc.report.model_dump_json(indent=2).encode(), "application/json")
        raise


@app.task(name=TASK_NAMES[JobKind.INGEST], **JOB_TASK_OPTIONS)
def ingest_dataset(self: Task, job_id: str) -> None:
    """Run ingest job ``job_id``."""
    run_job(self, job_id, ingest)
