"""Datasets: upload a zip, register a prefix already in the store, list, describe."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Path, UploadFile, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from dermasynth.auth import ApiKey
from dermasynth.config import Settings
from dermasynth.data.archives import ArchiveLimits
from dermasynth.data.catalog import DatasetCatalog, DatasetNotFound
from dermasynth.data.importer import REPORT_NAME
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.data.splits import SplitFractions
from dermasynth.data.uploads import INCOMING_PREFIX, IngestOptions, ingest_archive, ingest_store_prefix
from dermasynth.jobs.submission import QuotaExceeded
from dermasynth.storage import ObjectNotFound
from services.gateway.deps import EngineerKey, RegistryDep, SettingsDep, StoreDep
from services.gateway.idempotency import IdempotencyDep, IdempotencyKeyHeader, fingerprint

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Format = Literal["auto", "ham10000", "isic-csv", "imagefolder", "manifest"]
DatasetIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,79}$", description="a dataset id")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the engineer scope"},
    409: {"description": "a request with this Idempotency-Key is still being processed"},
    413: {"description": "the upload is larger than the limits (bytes, files, expanded size)"},
    422: {"description": "not a zip, unsafe paths, wrong layout, no decodable image, bad options, a reused key"},
}


class DatasetCreated(BaseModel):
    """A new dataset and the per-file report of its import."""

    dataset: DatasetInfo
    report: ImportReport


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


def _check_storage_quota(registry: DatasetCatalog, settings: Settings, owner: str, incoming: int) -> None:
    used = registry.stored_bytes(owner)
    if used + incoming > settings.max_stored_bytes_per_owner:
        raise QuotaExceeded(
            f"owner {owner!r} keeps {used} bytes of datasets; {incoming} more would pass its quota of "
            f"{settings.max_stored_bytes_per_owner} (DERMASYNTH_MAX_STORED_BYTES_PER_OWNER)"
        )


def _options(settings: Settings, fmt: str, seed: int, val_frac: float, test_frac: float, owner: str) -> IngestOptions:
    try:
        fractions = SplitFractions(train=1 - val_frac - test_frac, val=val_frac, test=test_frac)
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"val_frac {val_frac} and test_frac {test_frac} leave no training share: {exc.errors()[0]['msg']}",
        ) from None
    return IngestOptions(
        fmt=fmt,
        seed=seed,
        fractions=fractions,
        max_pixels=settings.max_image_pixels,
        owner=owner,
        limits=ArchiveLimits(settings.max_upload_files, settings.max_upload_expanded_bytes, settings.max_upload_ratio),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetCreated,
    responses=_ERRORS,
    summary="Upload a dataset as a zip (HAM10000, ISIC CSV, ImageFolder or DermaSynth manifest layout)",
)
def upload_dataset(
    key: EngineerKey,
    registry: RegistryDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
    file: Annotated[UploadFile, File(description="a .zip of the dataset folder")],
    name: Annotated[str, Form(min_length=1, max_length=100)],
    format: Annotated[Format, Form()] = "auto",
    seed: Annotated[int, Form(ge=0, le=2**32 - 1)] = 0,
    val_frac: Annotated[float, Form(ge=0, le=0.5)] = 0.15,
    test_frac: Annotated[float, Form(ge=0, le=0.5)] = 0.15,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DatasetCreated | JSONResponse:
    """Every file is decoded and checked; accepted images are stored without metadata; the report lists
    every rejected file with its reason. Nothing is stored unless the whole upload succeeds. With an
    ``Idempotency-Key``, a retry returns this same dataset instead of storing another."""
    options = _options(settings, format, seed, val_frac, test_frac, key.owner)
    form = json.dumps([name, format, seed, val_frac, test_frac])
    print_ = fingerprint(form, stream=file.file) if idempotency_key is not None else ""
    with idempotency.once(idempotency_key, key.id, "datasets", print_) as slot:
        if slot.replay is not None:
            return slot.replay
        _check_storage_quota(registry, settings, key.owner, file.size or 0)
        info, report = ingest_archive(registry, file.file, name=name, options=options)
        created = DatasetCreated(dataset=info, report=report)
        slot.save(status.HTTP_201_CREATED, created.model_dump_json())
    return created


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetCreated,
    responses=_ERRORS,
    summary="Import a dataset already in the object store under a prefix",
)
def register_dataset(
    key: EngineerKey, registry: RegistryDep, store: StoreDep, settings: SettingsDep, body: RegisterRequest
) -> DatasetCreated:
    """Only a folder under the owner's own ``incoming/{owner}/`` prefix; its sizes are checked before anything
    is downloaded."""
    options = _options(settings, body.format, body.seed, body.val_frac, body.test_frac, key.owner)
    _check_storage_quota(registry, settings, key.owner, 0)
    info, report = ingest_store_prefix(registry, store, body.prefix, name=body.name, options=options)
    return DatasetCreated(dataset=info, report=report)


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
