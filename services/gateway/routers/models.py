"""Model versions (engineer keys): export a finished training job, list versions with their lineage,
see which version is live, deploy and roll back without dropping prediction requests.

Export is a worker job (``kind: export`` on the ``default`` queue): ``POST /v1/models`` answers 202 with
the job id at once and the gateway process does no model work; the job registers the new version.

A deploy loads the new version beside the live one, moves the live pointer once it is ready, and
unloads the old one only after the gateways have followed (``DERMASYNTH_DEPLOY_SETTLE_S``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dermasynth.auth import ApiKey
from dermasynth.jobs import JobKind, JobState
from dermasynth.jobs.params import ExportParams
from dermasynth.jobs.submission import submit_job
from dermasynth.serving.inference_client import InferenceUnavailable
from dermasynth.serving.model_repository import BatchingChanges, BatchingOptions
from dermasynth.serving.registry import DeploymentError, UnknownModel
from dermasynth.serving.schemas import LiveModel, ModelDetail, ModelVersionInfo
from services.gateway.deps import DeployerKey, DispatcherDep, EngineerKey, JobStoreDep, MetricsDep, RegistryDep
from services.gateway.errors import problem_response
from services.gateway.inference import Inference, InferenceDep

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="a served model's name")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the engineer scope"},
    404: {"description": "no such model, version or job"},
}


ExportRequest = ExportParams
"""``POST /v1/models``: the export job's parameters (training job, name, calibration options)."""


class ExportAccepted(BaseModel):
    """The export job that will register the new version; poll ``GET /v1/jobs/{job_id}``."""

    job_id: str
    kind: str = JobKind.EXPORT.value
    state: JobState
    job_url: str


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
    return problem_response(code, reason, detail)


def _not_found(name: str) -> JSONResponse:
    return _error(status.HTTP_404_NOT_FOUND, f"no model {name!r} is registered", "not_found")


async def _visible(inference: Inference, name: str, key: ApiKey) -> bool:
    """Whether model ``name`` exists and the key's owner (or an admin) may see it."""
    owner = await asyncio.to_thread(inference.registry.owner, name)
    return owner is not None and key.may_see(owner)


@router.get("", response_model=list[LiveModel], responses=_ERRORS, summary="Models and their live versions")
async def list_models(key: EngineerKey, inference: InferenceDep) -> list[LiveModel]:
    names = await asyncio.to_thread(inference.registry.names)
    return [
        await asyncio.to_thread(inference.registry.live, name) for name in names if await _visible(inference, name, key)
    ]


@router.get("/{name}", response_model=ModelDetail, responses=_ERRORS, summary="A model's versions and live version")
async def get_model(key: EngineerKey, inference: InferenceDep, name: ModelName) -> ModelDetail | JSONResponse:
    versions = await asyncio.to_thread(inference.registry.versions, name)
    if not versions or not key.may_see(versions[0].owner):
        return _not_found(name)
    return ModelDetail(live=await asyncio.to_thread(inference.registry.live, name), versions=versions)


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersionInfo,
    responses=_ERRORS,
    summary="One version with its lineage (run, dataset, metrics)",
)
async def get_version(
    key: EngineerKey, inference: InferenceDep, name: ModelName, version: Annotated[int, Path(ge=1)]
) -> ModelVersionInfo | JSONResponse:
    if not await _visible(inference, name, key):
        return _not_found(name)
    try:
        return await asyncio.to_thread(inference.registry.version, name, version)
    except UnknownModel as exc:
        return _error(status.HTTP_404_NOT_FOUND, str(exc), "not_found")


@router.post(
    "",
    response_model=ExportAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **_ERRORS,
        409: {"description": "the job is not a succeeded training job"},
        503: {"description": "the queue is unavailable"},
    },
    summary="Export a finished training job's model as a new version (a worker job; answers 202 at once)",
)
def export_model(
    key: EngineerKey,
    inference: InferenceDep,
    jobs: JobStoreDep,
    datasets: RegistryDep,
    dispatcher: DispatcherDep,
    metrics: MetricsDep,
    request: ExportRequest,
    response: Response,
) -> ExportAccepted | JSONResponse:
    record = jobs.get(request.training_job_id)
    if not key.may_see(record.owner):
        return _error(status.HTTP_404_NOT_FOUND, f"no job with id {record.id!r}", "not_found")
    owner = inference.registry.owner(request.name)
    if owner is not None and owner != key.owner and not key.admin:
        return _not_found(request.name)  # another owner's model: not even its name is confirmed
    if record.kind != JobKind.TRAINING or record.state != JobState.SUCCEEDED:
        return _error(
            status.HTTP_409_CONFLICT,
            f"job {record.id} is a {record.state.value} {record.kind.value} job; "
            "only a succeeded training job can be exported",
            "not_exportable",
        )
    job = submit_job(
        JobKind.EXPORT,
        request,
        owner=record.owner,
        key_id=key.id,
        admin=key.admin,
        jobs=jobs,
        dispatcher=dispatcher,
        registry=datasets,
    )
    metrics.jobs_submitted.labels(job.kind.value).inc()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return ExportAccepted(job_id=job.id, state=job.state, job_url=f"/v1/jobs/{job.id}")


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
    key: DeployerKey, inference: InferenceDep, name: ModelName, request: DeployRequest
) -> LiveModel | JSONResponse:
    """Needs the deployer (or admin) scope: the live version is what clinicians are answered with."""
    if not await _visible(inference, name, key):
        return _not_found(name)
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
    key: DeployerKey, inference: InferenceDep, name: ModelName, request: RollbackRequest
) -> LiveModel | JSONResponse:
    """Needs the deployer (or admin) scope."""
    if not await _visible(inference, name, key):
        return _not_found(name)
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
