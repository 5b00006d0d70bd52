"""The sweeper: every worker re-sends the running jobs whose worker was lost, so they never wait for the
broker's visibility timeout (12 h by default; it stays as a backstop).

Every ``DERMASYNTH_JOB_SWEEP_INTERVAL_S`` (default a third of the lease) a daemon thread in each worker
process reads ``P:jobs:running:{queue}`` (job ids scored by lease expiry) for entries whose lease has
expired. For each, one Lua script claims it atomically (only one sweeper in the deployment wins; its
claim lasts one lease, so a sweeper that dies half-way is followed by another), then:

* a job still ``running`` whose user asked to cancel it ends ``cancelled`` (its last checkpoint kept);
* a job still ``running`` lost its worker: one more loss is counted; after
  ``DERMASYNTH_JOB_MAX_WORKER_LOSSES`` losses it fails as a poison job with that reason, otherwise it
  goes back to ``queued`` and a new message goes to its queue: the next worker resumes it from its last
  checkpoint;
* a ``queued`` job (a hand-back whose worker died before re-sending it) is re-sent;
* a final job just leaves the running set.

A job is thus back on its queue at most ``lease + interval`` (80 s with the defaults) after its worker
died. A duplicate message is harmless: a task whose job is final, or whose lease another worker holds,
does not run it twice. The thread also touches ``DERMASYNTH_WORKER_LIVENESS_FILE`` after each sweep,
failed or not (``python -m services.worker.health`` checks it), so a wedged worker fails its liveness
probe but a Redis outage does not get every worker restarted.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from dermasynth.config import Settings
from dermasynth.jobs import Claim, InvalidTransition, JobNotFound, JobState, RedisJobStore, run_prefix
from dermasynth.jobs.queues import QUEUES
from dermasynth.jobs.submission import JobDispatcher

logger = logging.getLogger(__name__)


def sweep_interval(settings: Settings) -> float:
    """Seconds between sweeps: the setting, or a third of the lease."""
    return settings.job_sweep_interval_s or settings.job_lease_s / 3


def poison_error(losses: int, limit: int, job_id: str) -> str:
    """The error of a job that kept losing its workers."""
    return (
        f"PoisonJob: the job's worker was lost {losses} times while running it (killed, out of memory, or its "
        f"node went away); it is not handed to another worker again (DERMASYNTH_JOB_MAX_WORKER_LOSSES={limit}). "
        f"Its last checkpoint is kept under {run_prefix(job_id)}/"
    )


class Sweeper:
    """Finds running jobs whose lease expired and re-sends them (or fails them as poison)."""

    def __init__(
        self, jobs: RedisJobStore, dispatcher: JobDispatcher, settings: Settings, queues: tuple[str, ...] = QUEUES
    ) -> None:
        self.jobs, self.dispatcher, self.settings, self.queues = jobs, dispatcher, settings, queues
        self.interval = sweep_interval(settings)
        self.liveness_file: Path = settings.worker_liveness_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[str]:
        """One pass over every queue; returns the ids of the jobs re-sent or failed."""
        handled = []
        for queue in self.queues:
            for job_id in self.jobs.expired_running(queue):
                claim = self.jobs.claim_expired(job_id, queue, self.settings.job_lease_s)
                if claim is not None and self._recover(claim):
                    handled.append(job_id)
        return handled

    def _recover(self, claim: Claim) -> bool:
        job_id = claim.job_id
        try:
            record = self.jobs.get(job_id)
        except JobNotFound:
            self.jobs.unclaim(claim)
            return False
        if record.terminal:
            self.jobs.unclaim(claim)
            return False
        try:
            if record.state == JobState.RUNNING and self.jobs.cancel_requested(job_id):
                self.jobs.transition(job_id, JobState.CANCELLED, result={"run": run_prefix(job_id)})
                logger.info("job %s: cancelled (its worker was lost)", job_id)
            elif record.state == JobState.RUNNING:
                losses, limit = self.jobs.count_loss(job_id), self.settings.job_max_worker_losses
                if losses >= limit:
                    self.jobs.transition(job_id, JobState.FAILED, error=poison_error(losses, limit, job_id))
                    logger.error("job %s failed as a poison job: its worker was lost %d times", job_id, losses)
                    self.jobs.unclaim(claim)
                    return True
                record = self.jobs.transition(job_id, JobState.QUEUED)
                logger.warning(
                    "job %s: its worker %s was lost (lease expired; loss %d/%d); re-sending it to the %s queue",
                    job_id,
                    record.worker,
                    losses,
                    limit,
                    claim.queue,
                )
                self.dispatcher.submit(record)
            else:
                logger.warning("job %s: handed back but not re-sent by its worker; re-sending it", job_id)
                self.dispatcher.submit(record)
        except InvalidTransition:  # cancelled or finished meanwhile
            pass
        self.jobs.unclaim(claim)
        return True

    def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # Redis down, broker down: try again at the next interval
                logger.warning("sweep failed; trying again in %.0f s", self.interval, exc_info=True)
            try:  # alive means: this thread runs (a Redis outage must not get every worker restarted)
                self.liveness_file.touch()
            except OSError:
                logger.warning("cannot touch the liveness file %s", self.liveness_file, exc_info=True)
            if self._stop.wait(self.interval):
                return

    def start(self) -> Sweeper:
        self._thread = threading.Thread(target=self._run, name="job-sweeper", daemon=True)
        self._thread.start()
        logger.info("job sweeper: every %.0f s on queues %s", self.interval, ", ".join(self.queues))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
