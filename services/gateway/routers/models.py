"""Model versions (engineer keys): export a finished training job, list versions with their lineage,
see which version is live, deploy and roll back without dropping prediction requests.

A deploy loads the new version beside the live one, moves the live pointer once it is ready, and
unloads the old one only after the gateways have followed (``DERMASYNTH_DEPLOY_SETTLE_S``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobState, run_prefix
from dermasynth.serving.export import ExportError, export_trained
from dermasynth.serving.inference_client import InferenceUnavailable
from dermasynth.serving.model_repository import BatchingChanges, BatchingOptions
from dermasynth.serving.registry import DeploymentError, UnknownModel
from dermasynth.serving.schemas import LiveModel, ModelDetail, ModelLineage, ModelVersionInfo
from dermasynth.storage import PrefixedStore
from services.gateway.deps import EngineerKey, JobStoreDep, RegistryDep, StoreDep
from services.gateway.inference import Inference, InferenceDep

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="a served model's name")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the engineer scope"},
    404: {"description": "no such model, version or job"},
}
_export_lock = threading.Lock()  # one export at a time per gateway: it is CPU-heavy


class ExportRequest(BaseModel):
    """Export a finished training job's model as a new version (not live until deployed)."""

    model_config = ConfigDict(extra="forbid")

    training_job_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    name: str = Field(default="classifier", pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    which: Literal["best", "latest"] = "best"
    min_probability: float = Field(default=0.5, ge=0, le=1, description="abstain below this top probability")
    ood_quantile: float = Field(default=0.95, ge=0.5, le=1, description="validation quantile of the OOD threshold")


class DeployRequest(BaseModel):
    """Make a version live, optionally changing some batching options (the others stay the last deploy's)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    batching: BatchingChanges | None = None


class RollbackRequest(BaseModel):
    """Go back to the version live before the current one, or to ``version``."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)


def _error(code: int, detail: str, reason: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "reason": reason}, status_code=code)


@router.get("", response_model=list[LiveModel], responses=_ERRORS, summary="Models and their live versions")
async def list_models(_: EngineerKey, inference: InferenceDep) -> list[LiveModel]:
    names = await asyncio.to_thread(inference.registry.names)
    return [await asyncio.to_thread(inference.registry.live, name) for name in names]


@router.get("/{name}", response_model=ModelDetail, responses=_ERRORS, summary="A model's versions and live version")
async def get_model(_: EngineerKey, inference: InferenceDep, name: ModelName) -> ModelDetail | JSONResponse:
    versions = await asyncio.to_thread(inference.registry.versions, name)
    if not versions:
        return _error(status.HTTP_404_NOT_FOUND, f"no model {name!r} is registered", "not_found")
    return ModelDetail(live=await asyncio.to_thread(inference.registry.live, name), versions=versions)


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersionInfo,
    responses=_ERRORS,
    summary="One version with its lineage (run, dataset, metrics)",
)
async def get_version(
    _: EngineerKey, inference: InferenceDep, name: ModelName, version: Annotated[int, Path(ge=1)]
) -> ModelVersionInfo | JSONResponse:
    try:
        return await asyncio.to_thread(inference.registry.version, name, version)
    except UnknownModel as exc:
        return _error(status.HTTP_404_NOT_FOUND, str(exc), "not_found")


@router.post(
    "",
    response_model=ModelVersionInfo,
    status_code=status.HTTP_201_CREATED,
    responses={
        **_ERRORS,
        409: {"description": "the job is not a succeeded training job"},
        422: {"description": "the export does not match the eager model"},
    },
    summary="Export a finished training job's model as a new version",
)
async def export_model(
    _: EngineerKey,
    inference: InferenceDep,
    jobs: JobStoreDep,
    datasets: RegistryDep,
    store: StoreDep,
    request: ExportRequest,
) -> ModelVersionInfo | JSONResponse:
    record = await asyncio.to_thread(jobs.get, request.training_job_id)
    if record.kind != JobKind.TRAINING or record.state != JobState.SUCCEEDED:
        return _error(
            status.HTTP_409_CONFLICT,
            f"job {record.id} is a {record.state.value} {record.kind.value} job; "
            "only a succeeded training job can be exported",
            "not_exportable",
        )
    dataset_id = str(record.params["dataset_id"])

    def export() -> ModelVersionInfo:
        with _export_lock:
            return _export(manifest=datasets.fetch(dataset_id))

    def _export(manifest: Manifest) -> ModelVersionInfo:
        trained = load_trained(PrefixedStore(store, record.run_prefix), request.which)
        exported = export_trained(
            trained, manifest, min_probability=request.min_probability, ood_quantile=request.ood_quantile
        )
        metrics = {k: float(v) for k, v in trained.metrics.items() if isinstance(v, int | float)}
        lineage = ModelLineage(run=run_prefix(record.id), dataset=dataset_id, job_id=record.id, metrics=metrics)
        return inference.registry.register(request.name, exported, lineage)

    try:
        return await asyncio.to_thread(export)
    except ExportError as exc:
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), "export_mismatch")


@router.post(
    "/{name}/deploy",
    response_model=LiveModel,
    responses={
        **_ERRORS,
        502: {"description": "Triton could not load the version (the live one keeps serving)"},
        503: {"description": "Triton is unreachable"},
    },
    summary="Make a version live; requests keep being answered during the switch",
)
async def deploy(
    _: EngineerKey, inference: InferenceDep, name: ModelName, request: DeployRequest
) -> LiveModel | JSONResponse:
    options = None
    if request.batching is not None:
        current = await asyncio.to_thread(inference.registry.serving_options, name)
        try:
            options = current.changed(request.batching)
        except ValidationError as exc:
            problems = "; ".join(error["msg"] for error in exc.errors())
            return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, f"batching: {problems}", "invalid_batching")
    return await _switch(inference, name, request.version, options, rollback=False)


@router.post(
    "/{name}/rollback",
    response_model=LiveModel,
    responses=_ERRORS,
    summary="Make the previously live version (or a given one) live again",
)
async def rollback(
    _: EngineerKey, inference: InferenceDep, name: ModelName, request: RollbackRequest
) -> LiveModel | JSONResponse:
    return await _switch(inference, name, request.version, None, rollback=True)


async def _switch(
    inference: Inference, name: str, version: int | None, batching: BatchingOptions | None, *, rollback: bool
) -> LiveModel | JSONResponse:
    try:
        if rollback:
            return await inference.deployer.rollback(name, version)
        assert version is not None
        return await inference.deployer.deploy(name, version, batching)
    except UnknownModel as exc:
        return _error(status.HTTP_404_NOT_FOUND, str(exc), "not_found")
    except DeploymentError as exc:
        return _error(status.HTTP_502_BAD_GATEWAY, str(exc), "deploy_failed")
    except InferenceUnavailable as exc:
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), "inference_unavailable")
