"""The audit trail keeps every entry, whatever order requests finish in and whichever gateway writes them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis

from dermasynth.auth.audit import AuditEntry, AuditLog


def _entry(at: datetime, key_id: str) -> AuditEntry:
    return AuditEntry(
        time=at, key_id=key_id, owner="derm-lab", action="POST /v1/predictions", resource="/v1/predictions", status=200
    )


def test_an_entry_older_than_the_newest_is_kept_with_its_own_time(redis_url: str, redis_prefix: str) -> None:
    # two gateway replicas whose clocks differ by two seconds, the later clock writing first
    replicas = [AuditLog(redis.Redis.from_url(redis_url), redis_prefix, timedelta(days=30)) for _ in range(2)]
    now = datetime.now(UTC).replace(microsecond=0)
    replicas[0].record(_entry(now, "fast-clock"))
    replicas[1].record(_entry(now - timedelta(seconds=2), "slow-clock"))
    entries = replicas[0].query().entries
    assert [(e.key_id, e.time) for e in entries] == [
        ("slow-clock", now - timedelta(seconds=2)),
        ("fast-clock", now),
    ]


def test_entries_past_the_retention_are_dropped_on_write(redis_url: str, redis_prefix: str) -> None:
    audit = AuditLog(redis.Redis.from_url(redis_url), redis_prefix, timedelta(milliseconds=50))
    audit.record(_entry(datetime.now(UTC), "first"))
    time.sleep(0.1)
    audit.record(_entry(datetime.now(UTC), "second"))
    assert [e.key_id for e in audit.query().entries] == ["second"]
