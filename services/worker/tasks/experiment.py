"""Experiment jobs: the whole ablation (arms x backbones x seeds, one shared GAN) with its report, resumable."""

from __future__ import annotations

import shutil
from typing import Any

from celery import Task

from dermasynth.experiments.runner import run_experiment
from dermasynth.jobs import JobKind, run_prefix
from dermasynth.jobs.params import ExperimentParams
from dermasynth.jobs.queues import TASK_NAMES
from services.worker.celery_app import JOB_TASK_OPTIONS, app
from services.worker.runtime import JobContext, run_job


def experiment(ctx: JobContext) -> dict[str, Any]:
    """Run the experiment into ``runs/{job_id}/``; a redelivered job resumes arm by arm."""
    params = ctx.params
    assert isinstance(params, ExperimentParams)
    manifest = ctx.dataset(params.dataset_id)
    ctx.fetch_weights(params.config.train.weights)
    scratch = ctx.resources.settings.cache_root / "experiments" / ctx.record.id
    try:
        result = run_experiment(params.config, manifest, ctx.out, scratch, ctx.progress, resume=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    prefix = run_prefix(ctx.record.id)
    return {
        "run": prefix,
        "dataset_id": params.dataset_id,
        "name": result.name,
        "runs": len(result.runs),
        "report": [f"{prefix}/{key}" for key in result.report],
        "headline": result.headline,
        "wall_s": result.wall_s,
    }


@app.task(name=TASK_NAMES[JobKind.EXPERIMENT], **JOB_TASK_OPTIONS)
def experiment_task(self: Task, job_id: str) -> None:
    """Run experiment job ``job_id``."""
    run_job(self, job_id, experiment)
