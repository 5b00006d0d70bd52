"""Export jobs: a finished training job's model as a new served version (ONNX, calibrated, parity-checked).

The work (feature extraction over the train and validation splits, ONNX export, parity check) runs here
on a CPU worker of the ``default`` queue, never in the gateway. The job is idempotent: a redelivered
job whose version was already registered returns that version instead of adding another.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.jobs import JobKind, run_prefix
from dermasynth.jobs.params import ExportParams
from dermasynth.jobs.queues import TASK_NAMES
from dermasynth.progress import Progress
from dermasynth.serving.export import export_trained
from dermasynth.serving.registry import ModelRegistry
from dermasynth.serving.schemas import ModelLineage, ModelVersionInfo
from dermasynth.storage import PrefixedStore
from services.worker.celery_app import JOB_TASK_OPTIONS, app
from services.worker.runtime import JobContext, run_job


def _summary(info: ModelVersionInfo, job_id: str) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "training_job_id": info.lineage.job_id,
        "export_job_id": job_id,
        "temperature": info.temperature,
        "set_coverage": info.set_coverage,
        "malignant_threshold": info.malignant_threshold,
        "ood_threshold": info.ood_threshold,
    }


def export(ctx: JobContext) -> dict[str, Any]:
    """Export the training job's model and register it as the next version of ``params.name``."""
    params = ctx.params
    assert isinstance(params, ExportParams)
    registry = ModelRegistry(ctx.store)
    done = [v for v in registry.versions(params.name) if v.lineage.export_job_id == ctx.record.id]
    if done:  # a redelivered job: its version is already there
        return _summary(done[0], ctx.record.id)
    training = ctx.jobs.get(params.training_job_id)
    dataset_id = str(training.params["dataset_id"])
    manifest = ctx.dataset(dataset_id)
    ctx.progress(Progress(phase="export", message=f"loading the {params.which} model of job {training.id}"))
    trained = load_trained(PrefixedStore(ctx.store, run_prefix(training.id)), params.which)
    prior = None
    if params.deployment_prior is not None:
        unknown = sorted(set(params.deployment_prior) - set(trained.classes))
        if unknown:
            raise ValueError(
                f"deployment_prior names classes the model does not have: {unknown}; it has {trained.classes}"
            )
        prior = [params.deployment_prior.get(c, 0.0) for c in trained.classes]
    ctx.progress(Progress(phase="export", message="fitting OOD score and calibration, exporting ONNX"))
    exported = export_trained(
        trained,
        manifest,
        deployment_prior=prior,
        min_probability=params.min_probability,
        ood_quantile=params.ood_quantile,
        coverage=params.coverage,
        malignant_sensitivity=params.malignant_sensitivity,
        max_set_size=params.max_set_size,
    )
    metrics = {k: float(v) for k, v in trained.metrics.items() if isinstance(v, int | float)}
    lineage = ModelLineage(
        run=run_prefix(training.id),
        dataset=dataset_id,
        job_id=training.id,
        export_job_id=ctx.record.id,
        metrics=metrics,
    )
    info = registry.register(params.name, exported, lineage, owner=ctx.record.owner)
    return _summary(info, ctx.record.id)


@app.task(name=TASK_NAMES[JobKind.EXPORT], **JOB_TASK_OPTIONS)
def export_model(self: Task, job_id: str) -> None:
    """Run export job ``job_id``."""
    run_job(self, job_id, export)
