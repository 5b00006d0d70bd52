"""The job state machine.

::

    queued ──> running ──> succeeded
      │  ▲       │ │ └───> failed
      │  └───────┘ └─────> cancelled
      ├──> cancelled         (cancelled before a worker took it)
      └──> failed            (refused before it ran, e.g. the broker was down)

``running -> queued`` is a retry after a transient error; ``running -> running`` is a redelivery
after a worker died. Succeeded, failed and cancelled are final.
"""

from __future__ import annotations

from dermasynth.jobs.records import JobState

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.RUNNING, JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(ValueError):
    """A move the state machine does not allow, e.g. cancelling a job that already succeeded."""

    def __init__(self, job_id: str, current: JobState, wanted: JobState) -> None:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none: it is final"
        super().__init__(
            f"job {job_id} is {current.value}; it cannot become {wanted.value} "
            f"(allowed from {current.value}: {allowed})"
        )
        self.job_id = job_id
        self.current = current
        self.wanted = wanted


def check_transition(job_id: str, current: JobState, wanted: JobState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> wanted`` is allowed."""
    if wanted not in ALLOWED[current]:
        raise InvalidTransition(job_id, current, wanted)
