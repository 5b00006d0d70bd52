"""The ingest job's body in this process: idempotent by job id, and it reads only its own upload."""

from __future__ import annotations

import io
import uuid

import pytest

from dermasynth.config import get_settings
from dermasynth.data.archives import ArchiveRejected
from dermasynth.data.uploads import ingested_dataset_id, upload_key
from dermasynth.jobs import JobKind, JobRecord
from dermasynth.jobs.params import IngestParams
from dermasynth.jobs.queues import QUEUE_OF
from dermasynth.progress import ignore_progress
from services.worker.resources import WorkerResources, worker_resources
from services.worker.runtime import JobContext
from services.worker.tasks.ingest import ingest, ingest_dataset
from tests.data.zips import imagefolder_zip
from tests.services.platform import Platform
from tests.services.worker.conftest import use_platform

OWNER = "team-ingest"


def _job(resources: WorkerResources, archive: bytes, location: str | None = None) -> JobRecord:
    job_id = uuid.uuid4().hex
    key = upload_key(OWNER, job_id)
    resources.store.put_bytes(key, archive, "application/zip")
    params = IngestParams(source="upload", location=location or key, name="redelivered", format="imagefolder")
    return resources.jobs.create(
        JobRecord(
            id=job_id,
            kind=JobKind.INGEST,
            queue=QUEUE_OF[JobKind.INGEST],
            params=params.model_dump(mode="json"),
            owner=OWNER,
        )
    )


def test_a_redelivered_ingest_job_publishes_its_dataset_once(resources: WorkerResources) -> None:
    record = _job(resources, imagefolder_zip())
    params = IngestParams.model_validate(record.params)
    first = ingest(JobContext(record, params, resources, ignore_progress))
    # the worker died after publishing, before the job was marked succeeded: the message comes again
    again = ingest(JobContext(record, params, resources, ignore_progress))
    assert first == again and first["dataset_id"] == ingested_dataset_id(record.id)
    assert [info.id for info in resources.registry.list(OWNER)] == [first["dataset_id"]]
    assert first["accepted"] == 6 and not resources.store.exists(upload_key(OWNER, record.id))


def test_the_task_runs_the_job_to_success_and_an_upload_job_reads_only_its_own_zip(
    resources: WorkerResources,
) -> None:
    record = _job(resources, imagefolder_zip())
    ingest_dataset.apply(args=(record.id,))
    done = resources.jobs.get(record.id)
    assert done.state == "succeeded" and done.result["dataset_id"] == ingested_dataset_id(record.id)

    other = _job(resources, imagefolder_zip())
    thief = _job(resources, io.BytesIO(b"not a zip").getvalue(), location=upload_key(OWNER, other.id))
    with pytest.raises(ArchiveRejected, match="reads only its own zip"):
        ingest(JobContext(thief, IngestParams.model_validate(thief.params), resources, ignore_progress))
    assert resources.store.exists(upload_key(OWNER, other.id))  # the other job's zip is untouched
    assert not resources.store.exists(upload_key(OWNER, thief.id))  # its own is deleted: it failed for good


def test_an_import_past_the_storage_quota_fails_its_job_and_leaves_nothing(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway checks the quota when the upload comes; the job checks it again when it runs (other
    imports of the owner may have finished meanwhile)."""
    resources = use_platform(platform, monkeypatch, DERMASYNTH_MAX_STORED_BYTES_PER_OWNER="1000")
    try:
        record = _job(resources, imagefolder_zip(n_per_class=10))
        ingest_dataset.apply(args=(record.id,))
        failed = resources.jobs.get(record.id)
        assert failed.state == "failed" and failed.error is not None
        assert failed.error.startswith("QuotaExceeded: ") and "DERMASYNTH_MAX_STORED_BYTES_PER_OWNER" in failed.error
        assert resources.registry.list(OWNER) == [] and not resources.store.exists(upload_key(OWNER, record.id))
    finally:
        get_settings.cache_clear()
        worker_resources.cache_clear()
