"""Prometheus metrics of a worker process, served on ``DERMASYNTH_WORKER_METRICS_PORT`` (0: off): jobs by kind
and outcome, job durations, the training/synthesis throughput of the job at hand, and GPU memory."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

JOB_OUTCOMES = Counter(
    "dermasynth_worker_jobs_total", "Jobs run by this worker, by kind and outcome", ["kind", "outcome"]
)
JOB_SECONDS = Histogram(
    "dermasynth_worker_job_seconds",
    "Wall time of one job attempt, by kind",
    ["kind"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
IMAGES_PER_SECOND = Gauge(
    "dermasynth_worker_images_per_second",
    "Images per second of the job this worker runs (training, GAN training, synthesis), by job kind",
    ["kind"],
)


class GpuMemoryCollector(Collector):
    """``dermasynth_worker_gpu_memory_bytes{device, state="allocated"|"reserved"|"peak_allocated"}`` of this
    process, read when Prometheus scrapes. Reports nothing until the process has initialised CUDA itself:
    the scrape thread never initialises it (that belongs to the job)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dermasynth_worker_gpu_memory_bytes", "GPU memory held by this worker's PyTorch", labels=["device", "state"]
        )
        try:
            import torch
        except ImportError:  # a worker image without torch has no GPU memory to report
            yield family
            return
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                device = str(index)
                family.add_metric([device, "allocated"], torch.cuda.memory_allocated(index))
                family.add_metric([device, "reserved"], torch.cuda.memory_reserved(index))
                family.add_metric([device, "peak_allocated"], torch.cuda.max_memory_allocated(index))
        yield family


GPU_MEMORY = GpuMemoryCollector()
REGISTRY.register(GPU_MEMORY)
