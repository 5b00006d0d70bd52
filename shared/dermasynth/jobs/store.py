"""Job records, progress, logs, cancel flags and leases, kept in Redis behind the :class:`JobStore` interface.

Keys (``P`` is ``Settings.job_key_prefix``)::

    P:jobs                  sorted set of job ids by creation time
    P:jobs:owner:{owner}    the same, per owner (lists of one owner page through it)
    P:jobs:active:{owner}   ids of the owner's queued and running jobs (the jobs quota)
    P:job:{id}              the record (JSON), changed only through state transitions
    P:job:{id}:progress     the latest Progress (JSON), written by the worker
    P:job:{id}:log          the last ``job_log_lines`` log lines;  P:job:{id}:logn  lines ever written
    P:job:{id}:cancel       set when a user asked to cancel
    P:job:{id}:lease        the worker running the job, with a TTL it keeps renewing
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import redis
from redis.client import Pipeline

from dermasynth.jobs.records import JobKind, JobPage, JobRecord, JobState, LogPage, utcnow
from dermasynth.jobs.states import InvalidTransition, check_transition
from dermasynth.progress import Progress

# Renew a lease only if this worker still holds it.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""
_LIST_BATCH = 200


class JobNotFound(KeyError):
    """No job with this id."""

    def __str__(self) -> str:
        return f"no job with id {self.args[0]!r}"


class JobStore(Protocol):
    """Where job state lives; the gateway and the workers share one."""

    def create(self, record: JobRecord) -> JobRecord:
        """Store a new (queued) job."""

    def get(self, job_id: str) -> JobRecord:
        """The job with its latest progress. Raises :class:`JobNotFound`."""

    def list(
        self,
        *,
        state: JobState | None = None,
        kind: JobKind | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
    ) -> JobPage:
        """Jobs newest first, optionally filtered (``owner``: only that owner's, through its own index)."""

    def active_jobs(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        worker: str | None = None,
    ) -> JobRecord:
        """Move the job to ``to``. Raises :class:`InvalidTransition` or :class:`JobNotFound`."""

    def set_progress(self, job_id: str, progress: Progress) -> None:
        """Record the job's latest progress."""

    def append_log(self, job_id: str, line: str) -> None:
        """Add one line to the job's log (only the newest ``max_log_lines`` are kept)."""

    def logs(self, job_id: str, since: int = 0) -> LogPage:
        """Log lines from line ``since`` on (older lines that were dropped are skipped)."""

    def request_cancel(self, job_id: str) -> JobRecord:
        """Ask the job to stop; a queued job is cancelled at once. Raises :class:`InvalidTransition` if final."""

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a user asked to cancel the job."""

    def acquire_lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Take (or renew) the job's lease for ``owner``; False if another live worker holds it."""

    def renew_lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease; False if it lost it."""

    def release_lease(self, job_id: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""


class RedisJobStore:
    """The :class:`JobStore` on Redis; every state change is a WATCH/MULTI transaction."""

    def __init__(self, client: redis.Redis, prefix: str = "dermasynth", *, max_log_lines: int = 2000) -> None:
        self.redis = client
        self.prefix = prefix
        self.max_log_lines = max_log_lines
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "dermasynth", *, max_log_lines: int = 2000) -> RedisJobStore:
        """A store on the Redis server at ``url`` (``redis://host:port/db``)."""
        return cls(redis.Redis.from_url(url), prefix, max_log_lines=max_log_lines)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}:job:{job_id}" + (f":{part}" if part else "")

    @property
    def _index(self) -> str:
        return f"{self.prefix}:jobs"

    def _owner_index(self, owner: str) -> str:
        return f"{self.prefix}:jobs:owner:{owner}"

    def _active(self, owner: str) -> str:
        return f"{self.prefix}:jobs:active:{owner}"

    def active_jobs(self, owner: str) -> int:
        return int(self.redis.scard(self._active(owner)))

    # -- records -----------------------------------------------------------------------------------
    def create(self, record: JobRecord) -> JobRecord:
        stored = record.model_dump_json(exclude={"progress", "cancel_requested"})
        if not self.redis.set(self._key(record.id), stored, nx=True):
            raise ValueError(f"a job with id {record.id!r} already exists")
        pipe = self.redis.pipeline()
        pipe.zadd(self._index, {record.id: record.created_at.timestamp()})
        pipe.zadd(self._owner_index(record.owner), {record.id: record.created_at.timestamp()})
        if not record.terminal:
            pipe.sadd(self._active(record.owner), record.id)
        pipe.execute()
        return record

    def get(self, job_id: str) -> JobRecord:
        raw, progress, cancel = self.redis.mget(
            self._key(job_id), self._key(job_id, "progress"), self._key(job_id, "cancel")
        )
        if raw is None:
            raise JobNotFound(job_id)
        record = JobRecord.model_validate_json(raw)
        if progress is not None:
            record.progress = Progress.model_validate_json(progress)
        record.cancel_requested = cancel is not None
        return record

    def list(
        self,
        *,
        state: JobState | None = None,
        kind: JobKind | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
    ) -> JobPage:
        index = self._index if owner is None else self._owner_index(owner)
        if state is None and kind is None:  # a page of the index: only the records shown are read
            ids = cast(list[bytes], self.redis.zrevrange(index, offset, offset + limit - 1))
            jobs = []
            for job_id in ids:
                try:
                    jobs.append(self.get(_text(job_id)))
                except JobNotFound:
                    continue
            return JobPage(jobs=jobs, total=int(self.redis.zcard(index)))
        matched: list[JobRecord] = []
        total = 0
        start = 0
        while True:
            ids = cast(list[bytes], self.redis.zrevrange(index, start, start + _LIST_BATCH - 1))
            if not ids:
                break
            start += len(ids)
            for raw in self.redis.mget([self._key(_text(i)) for i in ids]):
                if raw is None:
                    continue
                record = JobRecord.model_validate_json(raw)
                if (state is None or record.state == state) and (kind is None or record.kind == kind):
                    if offset <= total < offset + limit:
                        matched.append(self.get(record.id))
                    total += 1
        return JobPage(jobs=matched, total=total)

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        worker: str | None = None,
    ) -> JobRecord:
        key = self._key(job_id)

        def apply(pipe: Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise JobNotFound(job_id)
            record = JobRecord.model_validate_json(raw)
            check_transition(job_id, record.state, to)
            now = utcnow()
            changes: dict[str, Any] = {"state": to, "updated_at": now}
            if to == JobState.RUNNING:
                changes.update(attempts=record.attempts + 1, started_at=record.started_at or now, worker=worker)
            if to in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                changes["finished_at"] = now
            if error is not None:
                changes["error"] = error
            if result is not None:
                changes["result"] = {**record.result, **result}
            updated = record.model_copy(update=changes)
            pipe.multi()
            pipe.set(key, updated.model_dump_json(exclude={"progress", "cancel_requested"}))
            if updated.terminal:
                pipe.srem(self._active(record.owner), job_id)

        self.redis.transaction(apply, key)
        return self.get(job_id)

    # -- progress and logs -------------------------------------------------------------------------
    def set_progress(self, job_id: str, progress: Progress) -> None:
        self.redis.set(self._key(job_id, "progress"), progress.model_dump_json())

    def append_log(self, job_id: str, line: str) -> None:
        pipe = self.redis.pipeline()
        pipe.rpush(self._key(job_id, "log"), line)
        pipe.ltrim(self._key(job_id, "log"), -self.max_log_lines, -1)
        pipe.incr(self._key(job_id, "logn"))
        pipe.execute()

    def logs(self, job_id: str, since: int = 0) -> LogPage:
        if not self.redis.exists(self._key(job_id)):
            raise JobNotFound(job_id)
        pipe = self.redis.pipeline()
        pipe.lrange(self._key(job_id, "log"), 0, -1)
        pipe.get(self._key(job_id, "logn"))
        kept, written = pipe.execute()
        total = int(written or 0)
        first = total - len(kept)  # number of the oldest line still kept
        start = max(since, first)
        lines = [_text(line) for line in kept[start - first :]]
        return LogPage(start=start, next=total, lines=lines)

    # -- cancellation ------------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.terminal:
            raise InvalidTransition(job_id, record.state, JobState.CANCELLED)
        self.redis.set(self._key(job_id, "cancel"), "1")
        if record.state == JobState.QUEUED:
            try:
                return self.transition(job_id, JobState.CANCELLED, error=None)
            except InvalidTransition:  # a worker took it meanwhile: it sees the flag at its next step
                pass
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id, "cancel")))

    # -- leases ------------------------------------------------------------------------------------
    def acquire_lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        key = self._key(job_id, "lease")
        if self.redis.set(key, owner, nx=True, px=int(ttl_s * 1000)):
            return True
        return self.renew_lease(job_id, owner, ttl_s)

    def renew_lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=[self._key(job_id, "lease")], args=[owner, int(ttl_s * 1000)]))

    def release_lease(self, job_id: str, owner: str) -> None:
        self._release(keys=[self._key(job_id, "lease")], args=[owner])

    def ping(self) -> None:
        self.redis.ping()


def _text(value: bytes | str) -> str:
    """Redis replies are bytes unless the client decodes them."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
