"""Prometheus metrics of a worker process, served on ``DERMASYNTH_WORKER_METRICS_PORT`` (0: off)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOB_OUTCOMES = Counter(
    "dermasynth_worker_jobs_total", "Jobs run by this worker, by kind and outcome", ["kind", "outcome"]
)
JOB_SECONDS = Histogram(
    "dermasynth_worker_job_seconds",
    "Wall time of one job attempt, by kind",
    ["kind"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
