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
    P:job:{id}:alive        set with each renewal, expiring after ``ALIVE_S``: the worker is beating now
    P:job:{id}:losses       how many times the job's worker was lost (its lease expired while running)
    P:jobs:running:{queue}  sorted set of the running jobs of a queue, scored by lease expiry (ms since
                            the epoch, Redis clock): what the sweeper scans and autoscalers count

A lease and its entry in ``P:jobs:running:{queue}`` change together, in one Lua script, on Redis's
clock; the lease key is the truth (a lost worker's lease expires), the sorted set its index. Only an
expired lease lets another worker run the job; a missing alive key (no beat for ``ALIVE_S``) is enough
to cancel it at once, since a cancel needs no second worker.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis
from redis.client import Pipeline

from dermasynth.jobs.records import JobKind, JobPage, JobRecord, JobState, LogPage, run_prefix, utcnow
from dermasynth.jobs.states import InvalidTransition, check_transition
from dermasynth.progress import Progress

_NOW_MS = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: lease, running, alive; ARGV: owner, ttl_ms, job_id, alive_ms. Take (or renew) the lease unless
# another owner holds it; the short-lived alive key says the worker beat within ALIVE_S.
_ACQUIRE = (
    _NOW_MS
    + """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('set', KEYS[3], ARGV[1], 'PX', ARGV[4])
redis.call('zadd', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)
# Renew a lease only if this worker still holds it (and move its running entry along).
_RENEW = (
    _NOW_MS
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('set', KEYS[3], ARGV[1], 'PX', ARGV[4])
redis.call('zadd', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)
_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1], KEYS[3])
redis.call('zrem', KEYS[2], ARGV[2])
return 1
"""
# KEYS: lease, running; ARGV: owner, job_id, delay_ms. Give the lease up and let the job's running entry
# expire in delay_ms, so that a sweeper re-sends the job unless its worker does first (and then drops
# the entry with :meth:`RedisJobStore.unclaim`): a worker handing a job back, or abandoning it.
_ABANDON = (
    _NOW_MS
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1], KEYS[3])
local at = now + tonumber(ARGV[3])
redis.call('zadd', KEYS[2], at, ARGV[2])
return at
"""
)
# KEYS: lease, running; ARGV: job_id, claim_ms. The sweeper's atomic claim of a job whose lease expired:
# only one sweeper wins (the job's score moves claim_ms into the future, so if that sweeper dies
# half-way, another one claims it again later); returns the claim's score, or 0.
_CLAIM = (
    _NOW_MS
    + """
local score = redis.call('zscore', KEYS[2], ARGV[1])
if not score or tonumber(score) > now then return 0 end
local ttl = redis.call('pttl', KEYS[1])
if ttl > 0 then
  redis.call('zadd', KEYS[2], now + ttl, ARGV[1])
  return 0
end
local claimed = now + tonumber(ARGV[2])
redis.call('zadd', KEYS[2], claimed, ARGV[1])
return claimed
"""
)
# KEYS: running; ARGV: job_id, score. Drop the entry only if it is still the sweeper's claim.
_UNCLAIM = """
local score = redis.call('zscore', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('zrem', KEYS[1], ARGV[1]) end
return 0
"""
_LIST_BATCH = 200
ALIVE_S = 15.0
"""A running job's worker beats every third of this (and of the lease); no beat for this long: it is gone."""


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
        """Ask the job to stop; a queued job, or a running one whose worker is gone (no live lease), is
        cancelled at once. Raises :class:`InvalidTransition` if final."""

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a user asked to cancel the job."""

    def acquire_lease(self, job_id: str, owner: str, ttl_s: float, *, queue: str) -> bool:
        """Take (or renew) the job's lease for ``owner`` and list the job as running on ``queue``; False
        if another live worker holds it."""

    def renew_lease(self, job_id: str, owner: str, ttl_s: float, *, queue: str) -> bool:
        """Extend ``owner``'s lease; False if it lost it."""

    def release_lease(self, job_id: str, owner: str, *, queue: str) -> None:
        """Give the lease up if ``owner`` holds it (the job no longer runs on ``queue``)."""

    def abandon_lease(self, job_id: str, owner: str, *, queue: str, delay_s: float = 0.0) -> Claim | None:
        """Give ``owner``'s lease up and let the job's running entry expire in ``delay_s``: a sweeper
        re-sends the job then, unless the worker does first and calls :meth:`unclaim` with the returned
        claim. None if ``owner`` held no lease."""

    def lease_holder(self, job_id: str) -> str | None:
        """The worker holding the job's live lease, if any."""

    def expired_running(self, queue: str) -> builtins.list[str]:
        """Jobs listed as running on ``queue`` whose lease expired: the sweeper's candidates."""

    def claim_expired(self, job_id: str, queue: str, claim_s: float) -> Claim | None:
        """Atomically claim a running job whose lease expired, for ``claim_s``; None if another sweeper
        did or its worker is alive after all."""

    def count_loss(self, job_id: str) -> int:
        """Count one more loss of the job's worker; returns the losses so far."""

    def unclaim(self, claim: Claim) -> None:
        """Drop the job from the running set, unless a worker listed it again since the claim."""

    def running_counts(self, queues: Iterable[str]) -> dict[str, int]:
        """Jobs listed as running, per queue (what autoscalers count)."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""


@dataclass(frozen=True)
class Claim:
    """A hold on a job's running entry (a sweeper's claim, or a worker handing the job back): its score."""

    job_id: str
    queue: str
    score: int


class RedisJobStore:
    """The :class:`JobStore` on Redis; every state change is a WATCH/MULTI transaction."""

    def __init__(self, client: redis.Redis, prefix: str = "dermasynth", *, max_log_lines: int = 2000) -> None:
        self.redis = client
        self.prefix = prefix
        self.max_log_lines = max_log_lines
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._abandon = client.register_script(_ABANDON)
        self._claim = client.register_script(_CLAIM)
        self._unclaim = client.register_script(_UNCLAIM)

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
        """The owner's queued and running jobs; entries of jobs that ended by any path are pruned here."""
        ids = [_text(i) for i in cast(set[bytes], self.redis.smembers(self._active(owner)))]
        ended = []
        for job_id, raw in zip(ids, self.redis.mget([self._key(i) for i in ids]) if ids else [], strict=True):
            if raw is None or JobRecord.model_validate_json(raw).terminal:
                ended.append(job_id)
        if ended:
            self.redis.srem(self._active(owner), *ended)
        return len(ids) - len(ended)

    def running_key(self, queue: str) -> str:
        """``P:jobs:running:{queue}``: the running jobs of ``queue`` scored by lease expiry (see the module doc)."""
        return f"{self.prefix}:jobs:running:{queue}"

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

    # -- records written before owners existed ---------------------------------------------------------
    def ownerless(self) -> builtins.list[str]:
        """Ids of jobs stored before owners existed, oldest first: no ``owner`` in the record, or the legacy
        form whose ``owner`` was the submitting key's id (no ``key_id`` in the record). Reads every record:
        an operator's one-off, never a request path."""
        ids = [_text(i) for i in cast(builtins.list[bytes], self.redis.zrange(self._index, 0, -1))]
        found = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for job_id, raw in zip(chunk, self.redis.mget([self._key(i) for i in chunk]), strict=True):
                if raw is not None and _legacy_owner(json.loads(raw)):
                    found.append(job_id)
        return found

    def assign_owner(self, job_id: str, owner: str) -> JobRecord:
        """Give a job stored before owners existed to ``owner``: the record, the owner's index (lists page
        through it) and, while it is queued or running, the owner's active set (the jobs quota). A legacy
        owner (the submitting key's id) is kept as the record's ``key_id``.

        Raises:
            JobNotFound: no such job.
            ValueError: the job already has an owner.
        """
        key = self._key(job_id)

        def apply(pipe: Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise JobNotFound(job_id)
            stored = json.loads(raw)
            if not _legacy_owner(stored):
                raise ValueError(f"job {job_id} already belongs to owner {stored['owner']!r}")
            previous = stored.get("owner")
            record = JobRecord.model_validate(
                {**stored, "owner": owner, "key_id": stored.get("key_id", previous or "")}
            )
            pipe.multi()
            pipe.set(key, record.model_dump_json(exclude={"progress", "cancel_requested"}))
            if previous:
                pipe.zrem(self._owner_index(previous), job_id)
                pipe.srem(self._active(previous), job_id)
            pipe.zadd(self._owner_index(owner), {job_id: record.created_at.timestamp()})
            if not record.terminal:
                pipe.sadd(self._active(owner), job_id)

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
        key, lease, alive = self._key(job_id), self._key(job_id, "lease"), self._key(job_id, "alive")

        def apply(pipe: Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise JobNotFound(job_id)
            current = JobRecord.model_validate_json(raw)
            if current.terminal or (current.state == JobState.RUNNING and pipe.exists(lease) and pipe.exists(alive)):
                return  # final already, or a live worker that sees the flag at its next step
            # queued, or running on a worker that is gone: nobody would act on the flag, so end it here
            now = utcnow()
            changes = {"state": JobState.CANCELLED, "updated_at": now, "finished_at": now}
            if current.state == JobState.RUNNING:
                changes["result"] = {**current.result, "run": run_prefix(job_id)}
            updated = current.model_copy(update=changes)
            pipe.multi()
            pipe.set(key, updated.model_dump_json(exclude={"progress", "cancel_requested"}))
            pipe.zrem(self.running_key(current.queue), job_id)
            pipe.srem(self._active(current.owner), job_id)

        self.redis.transaction(apply, key, lease, alive)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id, "cancel")))

    # -- leases ------------------------------------------------------------------------------------
    def _lease_keys(self, job_id: str, queue: str) -> builtins.list[str]:
        return [self._key(job_id, "lease"), self.running_key(queue), self._key(job_id, "alive")]

    def acquire_lease(self, job_id: str, owner: str, ttl_s: float, *, queue: str) -> bool:
        args: builtins.list[str | int] = [owner, int(ttl_s * 1000), job_id, int(min(ttl_s, ALIVE_S) * 1000)]
        return bool(self._acquire(keys=self._lease_keys(job_id, queue), args=args))

    def renew_lease(self, job_id: str, owner: str, ttl_s: float, *, queue: str) -> bool:
        args: builtins.list[str | int] = [owner, int(ttl_s * 1000), job_id, int(min(ttl_s, ALIVE_S) * 1000)]
        return bool(self._renew(keys=self._lease_keys(job_id, queue), args=args))

    def release_lease(self, job_id: str, owner: str, *, queue: str) -> None:
        self._release(keys=self._lease_keys(job_id, queue), args=[owner, job_id])

    def abandon_lease(self, job_id: str, owner: str, *, queue: str, delay_s: float = 0.0) -> Claim | None:
        keys = self._lease_keys(job_id, queue)
        score = int(self._abandon(keys=keys, args=[owner, job_id, int(delay_s * 1000)]))
        return Claim(job_id, queue, score) if score else None

    def lease_holder(self, job_id: str) -> str | None:
        holder = self.redis.get(self._key(job_id, "lease"))
        return None if holder is None else _text(holder)

    def expired_running(self, queue: str) -> builtins.list[str]:
        seconds, micros = cast(tuple[int, int], self.redis.time())
        now_ms = seconds * 1000 + micros // 1000
        return [_text(i) for i in cast(list[bytes], self.redis.zrangebyscore(self.running_key(queue), "-inf", now_ms))]

    def claim_expired(self, job_id: str, queue: str, claim_s: float) -> Claim | None:
        keys = [self._key(job_id, "lease"), self.running_key(queue)]
        score = int(self._claim(keys=keys, args=[job_id, int(claim_s * 1000)]))
        return Claim(job_id, queue, score) if score else None

    def count_loss(self, job_id: str) -> int:
        return int(self.redis.incr(self._key(job_id, "losses")))

    def unclaim(self, claim: Claim) -> None:
        self._unclaim(keys=[self.running_key(claim.queue)], args=[claim.job_id, claim.score])

    def running_counts(self, queues: Iterable[str]) -> dict[str, int]:
        names = list(queues)
        pipe = self.redis.pipeline(transaction=False)
        for queue in names:
            pipe.zcard(self.running_key(queue))
        return {queue: int(count) for queue, count in zip(names, pipe.execute(), strict=True)}

    def ping(self) -> None:
        self.redis.ping()


def _legacy_owner(stored: dict[str, Any]) -> bool:
    """Whether a stored job record predates owners (no owner, or the submitting key's id in its place)."""
    return "owner" not in stored or "key_id" not in stored


def _text(value: bytes | str) -> str:
    """Redis replies are bytes unless the client decodes them."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
