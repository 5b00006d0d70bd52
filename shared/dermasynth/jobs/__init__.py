"""Jobs: records and their state machine, kept in Redis; queues and task names shared by gateway and workers."""

from __future__ import annotations

from dermasynth.jobs.records import JobKind, JobPage, JobRecord, JobState, LogPage, run_prefix
from dermasynth.jobs.states import InvalidTransition
from dermasynth.jobs.store import Claim, JobNotFound, JobStore, RedisJobStore

__all__ = [
    "Claim",
    "InvalidTransition",
    "JobKind",
    "JobNotFound",
    "JobPage",
    "JobRecord",
    "JobState",
    "JobStore",
    "LogPage",
    "RedisJobStore",
    "run_prefix",
]
