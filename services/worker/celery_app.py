"""The workers' Celery app: ``celery -A services.worker.celery_app worker -Q gan,train,default --pool=solo``.

Its configuration is :func:`dermasynth.jobs.queues.celery_config` (the one the gateway sends with):
queues ``gan``, ``train`` and ``default``, late acks, redelivery of a dead worker's job, one message
at a time. Run one worker process per GPU (``--pool=solo`` or ``-c 1``) and never touch CUDA in the
parent of a prefork pool. Task modules live in ``services.worker.tasks``, one per job kind.

Besides the tasks, each worker process runs the job sweeper (:mod:`services.worker.sweeper`: jobs of
lost workers go back to their queue within about lease + lease/3) and turns SIGTERM into a hand-back of
its job within ``DERMASYNTH_WORKER_SHUTDOWN_GRACE_S`` (:mod:`services.worker.shutdown`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from prometheus_client import start_http_server

from dermasynth.config import get_settings
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.logs import configure_logging
from services.worker.resources import worker_resources
from services.worker.shutdown import SHUTDOWN
from services.worker.sweeper import Sweeper

logger = logging.getLogger(__name__)

TASK_MODULES = [
    "services.worker.tasks.synthesis",
    "services.worker.tasks.training",
    "services.worker.tasks.evaluation",
    "services.worker.tasks.experiment",
    "services.worker.tasks.export",
    "services.worker.tasks.ingest",
]

app = make_celery(get_settings(), "dermasynth-worker")
app.conf.update(include=TASK_MODULES)

JOB_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "max_retries": None,  # the runtime counts retries of transient errors itself (DERMASYNTH_JOB_MAX_RETRIES)
    "retry_backoff": get_settings().job_retry_backoff_s,
    "retry_backoff_max": get_settings().job_retry_backoff_max_s,
    "retry_jitter": True,
}
"""Options of every job task: Celery's exponential backoff with full jitter for transient errors."""

_sweepers: list[Sweeper] = []


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    """``logging`` to stderr at ``DERMASYNTH_LOG_LEVEL`` in ``DERMASYNTH_LOG_FORMAT`` (Celery's own setup is
    skipped)."""
    configure_logging(get_settings())


@signals.worker_init.connect
def _metrics_server(**_: Any) -> None:
    """Serve this worker's Prometheus metrics (``DERMASYNTH_WORKER_METRICS_PORT``; 0 turns it off)."""
    port = get_settings().worker_metrics_port
    if port:
        start_http_server(port)
        logger.info("worker metrics on :%d/metrics", port)


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Re-send the jobs of lost workers from this worker (every worker sweeps; claims are atomic)."""
    resources = worker_resources()
    _sweepers.append(Sweeper(resources.jobs, CeleryDispatcher(app), resources.settings).start())


@signals.worker_shutting_down.connect
def _hand_back_on_shutdown(**_: Any) -> None:
    """SIGTERM (or SIGINT/SIGQUIT): the running job stops at its next checkpoint and goes back to its queue."""
    SHUTDOWN.request(get_settings().worker_shutdown_grace_s)


@signals.worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()
