"""An experiment job, in-process through Celery's ``apply``: every arm of a tiny ablation and its report."""

from __future__ import annotations

import uuid

import pytest

from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobRecord, JobState
from dermasynth.jobs.params import ExperimentParams
from services.worker.resources import WorkerResources
from services.worker.tasks.experiment import experiment_task

TINY = {
    "name": "job",
    "arms": ["real", "gan"],
    "backbones": ["mobilenet_v3_small"],
    "seeds": [0],
    "train": {
        "image_size": 32,
        "epochs": 1,
        "batch_size": 8,
        "max_steps_per_epoch": 2,
        "num_workers": 0,
        "device": "cpu",
        "keep_epoch_checkpoints": False,
    },
    "gan": {
        "image_size": 16,
        "steps": 3,
        "batch_size": 8,
        "z_dim": 16,
        "w_dim": 32,
        "channel_base": 128,
        "max_channels": 16,
        "checkpoint_every": 3,
        "snapshot_every": 1000,
        "grid_every": 3,
        "grid_size": 2,
        "log_every": 3,
        "device": "cpu",
    },
    "synthesis": {"mode": "balance", "ratio": 0.5},
    "evaluation": {"bootstrap": 200},
}


def test_experiment_job_runs_every_arm_and_writes_the_report(
    resources: WorkerResources, demo_dataset: Manifest
) -> None:
    dataset = resources.registry.publish(demo_dataset.root, name="demo", origin="local")
    params = ExperimentParams.model_validate({"dataset_id": dataset.id, "config": TINY})
    job = resources.jobs.create(
        JobRecord(id=uuid.uuid4().hex, kind=JobKind.EXPERIMENT, queue="train", params=params.model_dump(mode="json"))
    )
    experiment_task.apply(args=(job.id,))
    record = resources.jobs.get(job.id)
    assert record.state == JobState.SUCCEEDED, (record.error, resources.jobs.logs(job.id).lines[-5:])
    assert record.result["runs"] == 2 and record.result["headline"]
    stored = set(resources.store.list(f"runs/{job.id}/"))
    assert set(record.result["report"]) <= stored and f"runs/{job.id}/result.json" in stored
    assert any(key.endswith(".md") for key in record.result["report"])
    assert not (resources.settings.cache_root / "experiments" / job.id).exists()


def test_api_limits_on_experiments() -> None:
    with pytest.raises(ValueError, match="at most 200"):
        ExperimentParams.model_validate({"dataset_id": "ds-1", "config": {**TINY, "seeds": list(range(101))}})
    with pytest.raises(ValueError, match="no files of the worker"):
        ExperimentParams.model_validate(
            {"dataset_id": "ds-1", "config": {**TINY, "train": {**TINY["train"], "weights": "/tmp/w.pth"}}}
        )  # type: ignore[dict-item]
