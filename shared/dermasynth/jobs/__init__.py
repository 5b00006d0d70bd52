"""Jobs: records and their state machine, kept in Redis; queues and task names shared by gateway and workers.

The records, states and API schemas import only pydantic, so a client-only install (the CLI over HTTP,
the frontend) can use them; the Redis job store is imported on first use of its names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dermasynth.jobs.records import JobKind, JobPage, JobRecord, JobState, LogPage, run_prefix
from dermasynth.jobs.states import InvalidTransition

if TYPE_CHECKING:
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

_FROM_STORE = frozenset({"Claim", "JobNotFound", "JobStore", "RedisJobStore"})


def __getattr__(name: str) -> Any:
    """The store's names, imported (with redis) only when asked for."""
    if name in _FROM_STORE:
        from dermasynth.jobs import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
