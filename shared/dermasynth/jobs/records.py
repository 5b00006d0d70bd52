"""Job records: what the gateway, the workers, the CLI and the frontend say about one job."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from dermasynth.progress import Progress


class JobKind(StrEnum):
    """What a job does; each kind has its own parameters, Celery task and queue."""

    SYNTHESIS = "synthesis"
    TRAINING = "training"
    EVALUATION = "evaluation"
    EXPERIMENT = "experiment"
    EXPORT = "export"
    INGEST = "ingest"


class JobState(StrEnum):
    """Where a job is in its life; see :mod:`dermasynth.jobs.states` for the allowed moves."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class JobRecord(BaseModel):
    """One job as kept in the job store and returned by ``GET /v1/jobs/{id}``."""

    id: str
    kind: JobKind
    state: JobState = JobState.QUEUED
    queue: str
    params: dict[str, Any] = Field(description="the validated parameters of the job's kind")
    owner: str = Field(default="default", description="the team or project the job belongs to (its key's owner)")
    key_id: str = Field(default="", description="id of the API key that submitted the job")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(default=0, description="times a worker started (or resumed) the job")
    worker: str | None = None
    error: str | None = Field(default=None, description="why the job failed (kept once it failed)")
    result: dict[str, Any] = Field(default_factory=dict, description="outputs: run prefix, dataset id, metrics")
    progress: Progress | None = None
    cancel_requested: bool = False

    @property
    def terminal(self) -> bool:
        """Whether the job has finished (succeeded, failed or cancelled)."""
        return self.state in TERMINAL_STATES

    @property
    def run_prefix(self) -> str:
        """The store prefix every output of this job is written under."""
        return run_prefix(self.id)


def run_prefix(job_id: str) -> str:
    """``runs/{job_id}``: the deterministic home of a job's outputs."""
    return f"runs/{job_id}"


class JobPage(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobRecord]
    total: int = Field(description="jobs matching the filters")


class LogPage(BaseModel):
    """Log lines of a job from line ``start`` on; ask again with ``since=next`` for newer ones."""

    start: int
    next: int
    lines: list[str]
