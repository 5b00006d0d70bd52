"""What the jobs API sends and answers besides the job record itself: a submission and an output file.

The record (:class:`~dermasynth.jobs.records.JobRecord`, its kind, state and pages) lives in
:mod:`dermasynth.jobs.records`. Both modules are pure pydantic: the gateway client imports them in a
client-only install (no Redis, no Celery, no torch).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from dermasynth.jobs.records import JobKind


class JobSubmission(BaseModel):
    """``POST /v1/jobs``: a kind and its parameters (the gateway validates them against the kind's model)."""

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict)


class Artefact(BaseModel):
    """One output file of a job."""

    path: str = Field(description="relative to the job's run folder, e.g. 'metrics.json'")
    size: int
    url: str | None = Field(default=None, description="a time-limited direct download URL, when the store has them")
