"""The worker's metrics: throughput of the job at hand from its progress reports, and GPU memory."""

from __future__ import annotations

import uuid

import pytest
import torch
from prometheus_client import REGISTRY, generate_latest

from dermasynth.jobs import JobKind, JobRecord
from dermasynth.progress import Progress
from services.worker.metrics import GPU_MEMORY
from services.worker.resources import WorkerResources
from services.worker.runtime import Heartbeat, ProgressReporter


def test_progress_reports_set_the_images_per_second_of_the_job_kind(resources: WorkerResources) -> None:
    job = resources.jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind.SYNTHESIS, queue="gan", params={}))
    reporter = ProgressReporter(
        resources.jobs, job.id, Heartbeat(resources.jobs, job.id, "w", 60, queue="gan"), "synthesis"
    )
    reporter(Progress(phase="synthesize", step=3, images_per_s=412.5))
    assert REGISTRY.get_sample_value("dermasynth_worker_images_per_second", {"kind": "synthesis"}) == 412.5
    reporter(Progress(phase="synthesize", step=4))  # a report without a rate keeps the last one
    assert REGISTRY.get_sample_value("dermasynth_worker_images_per_second", {"kind": "synthesis"}) == 412.5


def test_gpu_memory_is_exported_only_once_cuda_is_in_use() -> None:
    samples = [s for family in GPU_MEMORY.collect() for s in family.samples]
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        assert samples == []  # the scrape never initialises CUDA itself
    assert b"# TYPE dermasynth_worker_gpu_memory_bytes gauge" in generate_latest(REGISTRY)


@pytest.mark.gpu
def test_gpu_memory_follows_what_the_job_allocates() -> None:
    tensor = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device="cuda:0")
    samples = {
        s.labels["state"]: s.value
        for family in GPU_MEMORY.collect()
        for s in family.samples
        if s.labels["device"] == "0"
    }
    assert samples["allocated"] >= tensor.numel() and samples["reserved"] >= samples["allocated"]
    assert samples["peak_allocated"] >= samples["allocated"]
