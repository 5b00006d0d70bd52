"""Synthesis jobs: train a GAN on a dataset (resuming from its checkpoint), synthesize, publish a new dataset."""

from __future__ import annotations

import shutil
from typing import Any

from celery import Task

from dermasynth.gan.synthesis import SYNTHESIS_RECORD, synthesize
from dermasynth.gan.training_loop import train_gan
from dermasynth.jobs import JobKind, run_prefix
from dermasynth.jobs.params import SynthesisParams
from dermasynth.jobs.queues import TASK_NAMES
from dermasynth.storage import PrefixedStore
from services.worker.celery_app import JOB_TASK_OPTIONS, app
from services.worker.runtime import JobContext, run_job

GAN_FOLDER = "gan"


def synthesized_dataset_id(job_id: str) -> str:
    """The id of the dataset a synthesis job publishes (deterministic: a rerun publishes it once)."""
    return f"syn-{job_id}"


def synthesis(ctx: JobContext) -> dict[str, Any]:
    """GAN under ``runs/{job_id}/gan/``; the new dataset under ``datasets/syn-{job_id}/``."""
    params = ctx.params
    assert isinstance(params, SynthesisParams)
    source = ctx.resources.registry.get(params.dataset_id)
    manifest = ctx.dataset(params.dataset_id)
    gan_store = PrefixedStore(ctx.store, f"{run_prefix(ctx.record.id)}/{GAN_FOLDER}")
    gan = train_gan(params.gan, manifest, gan_store, ctx.progress, resume=True)
    scratch = ctx.resources.settings.cache_root / "synthesis" / ctx.record.id
    try:
        synthesized = synthesize(gan_store, manifest, params.plan, scratch, ctx.progress)
        ctx.out.put_file(SYNTHESIS_RECORD, scratch / SYNTHESIS_RECORD)
        info = ctx.resources.registry.publish(
            scratch,
            name=params.name or f"{source.name} + synthetic ({ctx.record.id[:8]})",
            origin="synthesis",
            dataset_id=synthesized_dataset_id(ctx.record.id),
            job_id=ctx.record.id,
            parent_id=params.dataset_id,
            owner=ctx.record.owner or source.owner,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "run": run_prefix(ctx.record.id),
        "gan": f"{run_prefix(ctx.record.id)}/{GAN_FOLDER}",
        "dataset_id": info.id,
        "parent_dataset_id": params.dataset_id,
        "generator_id": gan.generator_id,
        "gan_steps": gan.step,
        "train_counts": synthesized.class_counts("train"),
        "sources": info.stats.sources,
    }


@app.task(name=TASK_NAMES[JobKind.SYNTHESIS], **JOB_TASK_OPTIONS)
def synthesis_task(self: Task, job_id: str) -> None:
    """Run synthesis job ``job_id``."""
    run_job(self, job_id, synthesis)
