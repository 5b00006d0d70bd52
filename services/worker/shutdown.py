"""Graceful shutdown of a worker: on SIGTERM its job stops at the next checkpoint, goes back to the queue, and
the worker exits within ``DERMASYNTH_WORKER_SHUTDOWN_GRACE_S``.

Celery's own warm shutdown (SIGTERM) stops taking messages and waits for the running task; it would wait
for a whole training job. So the worker also records the shutdown here (from Celery's
``worker_shutting_down`` signal), and the job's progress callback asks :func:`should_hand_back` at every
step:

* at once when stopping there keeps the work: the engine writes a checkpoint when it stops (GAN
  training, synthesis, evaluation) or has just written one (a classifier's end of epoch);
* mid-epoch of classifier training (its checkpoints are per epoch), only once half the grace period has
  passed: the epoch under way usually ends sooner and nothing is trained twice.

Celery's soft shutdown (``worker_soft_shutdown_timeout``) does not fit: it serves cold shutdowns only, and
its wait sleeps inside the signal handler, which in a solo-pool worker is the thread running the job.

The job then raises :class:`HandBack`; the runtime re-queues it (state ``queued``, a new message) and
the task returns, so Celery acks the old message and exits. If the job cannot stop by
``grace - FORCED_EXIT_MARGIN_S`` (a step that takes minutes), a watchdog thread gives the lease up, marks
the job's running entry expired (the sweeper of any worker re-sends it at once) and ends the process
before Kubernetes kills it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dermasynth.progress import Cancelled, Progress

logger = logging.getLogger(__name__)

FORCED_EXIT_MARGIN_S = 5.0
"""The watchdog ends the process this long before the grace period runs out."""
CHECKPOINT_WINDOW = 0.5
"""Share of the grace period a mid-epoch job may use to reach its next checkpoint."""
EXIT_CODE_FORCED = 75  # EX_TEMPFAIL: the job was handed back, try again elsewhere


class HandBack(Cancelled):
    """Raised from the progress callback: the worker is shutting down; stop here (the engine keeps its
    checkpoint, as for a cancel) and the runtime puts the job back on its queue."""


@dataclass
class Shutdown:
    """This process's shutdown: when it was asked for, and what the watchdog does at the deadline."""

    grace_s: float = 90.0
    requested_at: float | None = None
    _abandon: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def request(self, grace_s: float) -> None:
        """Start the shutdown (idempotent) and the watchdog that ends the process at the deadline."""
        with self._lock:
            if self.requested_at is not None:
                return
            self.grace_s, self.requested_at = grace_s, time.monotonic()
        logger.warning("shutdown requested: the running job (if any) is handed back within %.0f s", grace_s)
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def elapsed(self) -> float:
        return 0.0 if self.requested_at is None else time.monotonic() - self.requested_at

    def should_hand_back(self, progress: Progress) -> bool:
        """Whether the job reporting ``progress`` should stop now (see the module docstring)."""
        if not self.requested:
            return False
        mid_epoch = progress.phase == "train" or progress.metrics.get("stage") == "train"
        return not mid_epoch or self.elapsed() >= self.grace_s * CHECKPOINT_WINDOW

    def on_deadline(self, abandon: Callable[[], None] | None) -> None:
        """What the watchdog runs before ending the process (give up the running job's lease), or None."""
        with self._lock:
            self._abandon = abandon

    def _watchdog(self) -> None:
        time.sleep(max(0.0, self.grace_s - FORCED_EXIT_MARGIN_S))
        with self._lock:
            abandon = self._abandon
        if abandon is None:
            return  # no job left: Celery's warm shutdown ends the process
        logger.error("the job did not stop within the grace period; giving it up and exiting now")
        try:
            abandon()
        finally:
            logging.shutdown()
            os._exit(EXIT_CODE_FORCED)


SHUTDOWN = Shutdown()
"""The process's shutdown state (set by the worker's ``worker_shutting_down`` handler)."""
