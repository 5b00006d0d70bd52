"""The workers' Celery app: ``celery -A services.worker.celery_app worker -Q gan,train,default --pool=solo``.

Its configuration is :func:`dermasynth.jobs.queues.celery_config` (the one the gateway sends with):
queues ``gan``, ``train`` and ``default``, late acks, redelivery of a dead worker's job, one message
at a time. Run one worker process per GPU (``--pool=solo`` or ``-c 1``) and never touch CUDA in the
parent of a prefork pool. Task modules live in ``services.worker.tasks``, one per job kind.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from prometheus_client import start_http_server

from dermasynth.config import get_settings
from dermasynth.jobs.queues import make_celery
from dermasynth.logs import configure_logging

logger = logging.getLogger(__name__)

TASK_MODULES = [
    "services.worker.tasks.synthesis",
    "services.worker.tasks.training",
    "services.worker.tasks.evaluation",
    "services.worker.tasks.experiment",
]

app = make_celery(get_settings(), "dermasynth-worker")
app.conf.update(include=TASK_MODULES)


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
