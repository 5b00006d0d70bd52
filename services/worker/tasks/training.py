"""Training jobs: fit a classifier on a dataset (resuming from its checkpoint), then evaluate its best epoch."""

from __future__ import annotations

from typing import Any

from celery import Task

from dermasynth.classifier.engine import fit
from dermasynth.jobs import JobKind, run_prefix
from dermasynth.jobs.params import TrainingParams
from dermasynth.jobs.queues import TASK_NAMES
from dermasynth.progress import Progress
from dermasynth.storage.state_dicts import LATEST
from services.worker.celery_app import JOB_TASK_OPTIONS, app
from services.worker.runtime import JobContext, run_job
from services.worker.tasks.evaluation import evaluate_into, summary


def train(ctx: JobContext) -> dict[str, Any]:
    """Fit on the dataset's train split into ``runs/{job_id}/``; a redelivered job resumes from its checkpoint."""
    params = ctx.params
    assert isinstance(params, TrainingParams)
    manifest = ctx.dataset(params.dataset_id)
    if not ctx.out.exists(LATEST):  # a resumed run starts from its checkpoint, not from the weights
        ctx.fetch_weights(params.config.weights)
    resources = ctx.resources  # the decoded-image cache is shared with other workers through the object store
    result = fit(
        params.config,
        manifest,
        ctx.out,
        ctx.progress,
        resume=True,
        cache_root=resources.settings.cache_root,
        cache_store=resources.store,
    )
    outcome: dict[str, Any] = {
        "run": run_prefix(ctx.record.id),
        "dataset_id": params.dataset_id,
        "model": params.config.model,
        "classes": result.classes,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_val_balanced_accuracy": result.best_val_balanced_accuracy,
    }
    if params.evaluate_split is not None:
        ctx.progress(Progress(phase="evaluate", message=f"best epoch on the {params.evaluate_split} split"))
        report = evaluate_into(ctx.out, manifest, params.evaluate_split, tta=params.tta)
        outcome["metrics"] = summary(report)
    return outcome


@app.task(name=TASK_NAMES[JobKind.TRAINING], **JOB_TASK_OPTIONS)
def training(self: Task, job_id: str) -> None:
    """Run training job ``job_id``."""
    run_job(self, job_id, train)
