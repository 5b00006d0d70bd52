"""A synthesis job, in-process through Celery's ``apply``: a tiny GAN, synthetic images, a new dataset."""

from __future__ import annotations

import uuid

import pytest

from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobRecord, JobState
from dermasynth.jobs.params import SynthesisParams
from services.worker.resources import WorkerResources
from services.worker.tasks.synthesis import synthesis_task, synthesized_dataset_id

TINY_GAN = {
    "image_size": 16,
    "steps": 6,
    "batch_size": 8,
    "checkpoint_every": 3,
    "snapshot_every": 6,
    "grid_every": 6,
    "grid_size": 2,
    "log_every": 3,
    "z_dim": 16,
    "w_dim": 16,
    "channel_base": 64,
    "max_channels": 16,
    "device": "cpu",
}


def test_synthesis_publishes_a_dataset_with_synthetic_training_images(
    resources: WorkerResources, demo_dataset: Manifest
) -> None:
    source = resources.registry.publish(demo_dataset.root, name="demo", origin="local")
    params = SynthesisParams.model_validate(
        {"dataset_id": source.id, "gan": TINY_GAN, "plan": {"mode": "at_least", "at_least": 12}}
    )
    job = resources.jobs.create(
        JobRecord(id=uuid.uuid4().hex, kind=JobKind.SYNTHESIS, queue="gan", params=params.model_dump(mode="json"))
    )
    synthesis_task.apply(args=(job.id,))
    record = resources.jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED, (record.error, resources.jobs.logs(job.id).lines)
    dataset_id = synthesized_dataset_id(job.id)
    assert record.result["dataset_id"] == dataset_id and record.result["gan_steps"] == 6
    info = resources.registry.get(dataset_id)
    assert info.origin == "synthesis" and info.parent_id == source.id and info.job_id == job.id
    made = resources.registry.fetch(dataset_id)
    synthetic = [r for r in made if r.source == "synthetic"]
    assert synthetic and all(r.split == "train" and r.generator == record.result["generator_id"] for r in synthetic)
    assert min(made.class_counts("train").values()) >= 12
    assert len(made) - len(synthetic) == len(demo_dataset)
    run = resources.store.list(f"runs/{job.id}/")
    assert {
        f"runs/{job.id}/gan/checkpoint.pth",
        f"runs/{job.id}/synthesis.json",
        f"runs/{job.id}/_COMPLETE.json",
    } <= set(run)
    assert not (resources.settings.cache_root / "synthesis" / job.id).exists()


def test_api_limits_on_synthesis_parameters() -> None:
    with pytest.raises(ValueError, match="steps"):
        SynthesisParams.model_validate({"dataset_id": "ds-1", "gan": {"steps": 10**7}})
    with pytest.raises(ValueError, match="at most"):
        SynthesisParams.model_validate({"dataset_id": "ds-1", "plan": {"mode": "at_least", "at_least": 10**6}})
