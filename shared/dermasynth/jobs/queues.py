"""Celery queues, task names and broker configuration shared by the gateway (sender) and the workers.

The gateway enqueues tasks by name with :class:`CeleryDispatcher` and never imports the worker code.
Each job is one Celery message whose task id is the job id, so ``revoke(job_id)`` and redelivery
address the job itself.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from dermasynth.config import Settings
from dermasynth.jobs.records import JobKind, JobRecord

GAN_QUEUE = "gan"
TRAIN_QUEUE = "train"
DEFAULT_QUEUE = "default"
QUEUES: tuple[str, ...] = (GAN_QUEUE, TRAIN_QUEUE, DEFAULT_QUEUE)

TASK_NAMES: dict[JobKind, str] = {
    JobKind.SYNTHESIS: "dermasynth.synthesis",
    JobKind.TRAINING: "dermasynth.training",
    JobKind.EVALUATION: "dermasynth.evaluation",
    JobKind.EXPERIMENT: "dermasynth.experiment",
    JobKind.EXPORT: "dermasynth.export",
    JobKind.INGEST: "dermasynth.ingest",
}

# GAN training needs a GPU pool of its own; classifier training and experiments share one; evaluation
# of a finished run, export of one for serving, and dataset ingest (upload, register) are CPU work for the
# workers on ``default``.
QUEUE_OF: dict[JobKind, str] = {
    JobKind.SYNTHESIS: GAN_QUEUE,
    JobKind.TRAINING: TRAIN_QUEUE,
    JobKind.EVALUATION: DEFAULT_QUEUE,
    JobKind.EXPERIMENT: TRAIN_QUEUE,
    JobKind.EXPORT: DEFAULT_QUEUE,
    JobKind.INGEST: DEFAULT_QUEUE,
}


def broker_key_prefix(settings: Settings) -> str:
    """Prefix of Celery's own Redis keys (queues, unacked messages), so deployments sharing a Redis stay apart."""
    return f"{settings.job_key_prefix}:celery:"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration every process uses.

    One message per job, acknowledged only when the task returns (``task_acks_late``) and put back
    when its worker dies (``task_reject_on_worker_lost``; after ``visibility_timeout`` on Redis).
    Workers take one message at a time (``worker_prefetch_multiplier=1``). There is no result
    backend: job state lives in the job store.
    """
    visibility = settings.job_visibility_timeout_s
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "global_keyprefix": broker_key_prefix(settings),
            # Sweep for messages of dead workers often enough for short visibility timeouts.
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {name: {"queue": QUEUE_OF[kind]} for kind, name in TASK_NAMES.items()},
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def make_celery(settings: Settings, name: str = "dermasynth") -> Celery:
    """A Celery app configured by :func:`celery_config` (tasks are registered by the worker package)."""
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


class CeleryDispatcher:
    """Sends jobs to their queue and revokes them; what the gateway uses instead of importing tasks."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def submit(self, record: JobRecord) -> None:
        """Enqueue the job's task on its queue, with the job id as the task id."""
        self.app.send_task(TASK_NAMES[record.kind], args=(record.id,), task_id=record.id, queue=record.queue)

    def revoke(self, job_id: str) -> None:
        """Tell the workers to drop the job's message if it has not started (running jobs see the cancel flag)."""
        self.app.control.revoke(job_id)

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting on each queue (what autoscalers scale the workers on)."""
        with self.app.connection_for_write() as connection:
            client = connection.default_channel.client
            return {queue: int(client.llen(queue)) for queue in QUEUES}
