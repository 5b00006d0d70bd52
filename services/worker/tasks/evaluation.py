"""Evaluation jobs: a finished training job's model on a split of real held-out images."""

from __future__ import annotations

from typing import Any, Literal

import torch
from celery import Task

from dermasynth.classifier.checkpoint import BEST, LATEST
from dermasynth.classifier.evaluate import EvaluationReport, evaluate_run
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, run_prefix
from dermasynth.jobs.params import EvaluationParams
from dermasynth.jobs.queues import TASK_NAMES
from dermasynth.storage import ObjectStore
from services.worker.celery_app import JOB_TASK_OPTIONS, app
from services.worker.runtime import JobContext, run_job


def evaluation_device() -> str:
    """Where this worker evaluates: its GPU when it has one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def summary(report: EvaluationReport) -> dict[str, Any]:
    """The headline figures of a report, for the job's result."""
    return {
        "split": report.split,
        "n": report.n,
        "balanced_accuracy": report.balanced_accuracy,
        "macro_f1": report.macro_f1,
        "accuracy": report.accuracy,
        "auc": report.auc,
        "epoch": report.epoch,
    }


def evaluate_into(
    run: ObjectStore,
    manifest: Manifest,
    split: str,
    *,
    tta: bool,
    which: Literal["best", "latest"] = "best",
    bootstrap: int = 1000,
) -> EvaluationReport:
    """Evaluate the model in ``run`` and write ``eval/{split}/metrics.json`` and its figures into ``run``."""
    return evaluate_run(
        run,
        manifest,
        split,
        tta=tta,
        bootstrap=bootstrap,
        which=which,
        prefix=f"eval/{split}",
        device=evaluation_device(),
    )


def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Copy the trained model into this job's run folder and evaluate it there."""
    params = ctx.params
    assert isinstance(params, EvaluationParams)
    training = ctx.jobs.get(params.training_job_id)
    dataset_id = params.dataset_id or str(training.params["dataset_id"])
    manifest = ctx.dataset(dataset_id)
    checkpoint = BEST if params.which == "best" else LATEST
    source = f"{run_prefix(training.id)}/{checkpoint}"
    if not ctx.out.exists(checkpoint):
        ctx.store.copy(source, f"{run_prefix(ctx.record.id)}/{checkpoint}")
    report = evaluate_into(
        ctx.out, manifest, params.split, tta=params.tta, which=params.which, bootstrap=params.bootstrap
    )
    return {
        "run": run_prefix(ctx.record.id),
        "training_job_id": training.id,
        "dataset_id": dataset_id,
        "metrics": summary(report),
    }


@app.task(name=TASK_NAMES[JobKind.EVALUATION], **JOB_TASK_OPTIONS)
def evaluation(self: Task, job_id: str) -> None:
    """Run evaluation job ``job_id``."""
    run_job(self, job_id, evaluate)
