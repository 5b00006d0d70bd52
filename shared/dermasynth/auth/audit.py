"""The audit trail: who did what (key id, owner, action, resource, time), kept in a Redis stream.

When a key with the ``delegate`` scope (the web app's service key behind an identity provider) names
the person it acts for in ``X-DermaSynth-On-Behalf-Of``, the entry names that person too
(``on_behalf_of``, checked by :func:`check_person`); other keys may not send the header.

Entries are appended to ``P:audit`` (numbered by Redis; the request's time is a field) and trimmed to
``retention`` on every write (``XADD ... MINID``), so the stream never holds entries older than the
configured period. For predictions an entry names the model, its version and the number of images, never
image content. Admin keys query it through ``GET /v1/audit``, newest first, paged by entry id.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from pydantic import BaseModel, Field

_FIELDS = ("key_id", "owner", "action", "resource", "status", "on_behalf_of", "model", "model_version", "images")
PERSON_PATTERN = r"^[A-Za-z0-9._@+\-'](?:[A-Za-z0-9._@+\-' ]{0,252}[A-Za-z0-9._@+\-'])?$"
"""An e-mail address or a plain name: 1-254 ASCII letters, digits, spaces (not at either end) and ``.@_+-'``."""
_PERSON = re.compile(PERSON_PATTERN)


def check_person(value: str) -> str:
    """Return ``value`` (whom a delegate key acts for) if well formed, else raise ValueError saying what is accepted.

    The value lands in the audit trail and in logs, so nothing else (no control characters, no line breaks)
    gets through.
    """
    if not _PERSON.fullmatch(value):
        shown = value if len(value) <= 80 and value.isprintable() else f"{len(value)} characters"
        raise ValueError(
            f"on-behalf-of value {shown!r} is not accepted: an e-mail address or name of 1-254 ASCII letters, "
            "digits, spaces (not at either end) and . @ _ + - '"
        )
    return value


class AuditEntry(BaseModel):
    """One audited request."""

    id: str = Field(default="", description="the stream entry id (time-ordered); page with ?before=<id>")
    time: datetime
    key_id: str
    owner: str
    action: str = Field(description="METHOD and route, e.g. 'POST /v1/models/{name}/deploy'")
    resource: str = Field(description="the path asked for, e.g. '/v1/models/classifier/deploy'")
    status: int
    on_behalf_of: str | None = Field(
        default=None, description="the person a delegate key (the web app) acted for (X-DermaSynth-On-Behalf-Of)"
    )
    model: str | None = None
    model_version: int | None = None
    images: int | None = None


class AuditPage(BaseModel):
    """Entries newest first; ``next_before`` pages on (None: no older entries)."""

    entries: list[AuditEntry]
    next_before: str | None = None


class AuditLog:
    """Appends and queries audit entries in one Redis stream."""

    def __init__(self, client: redis.Redis, prefix: str, retention: timedelta) -> None:
        self.redis = client
        self.key = f"{prefix}:audit"
        self.retention = retention

    def record(self, entry: AuditEntry) -> str:
        """Append ``entry`` and drop entries older than the retention.

        Redis numbers the entry (``*``): ids taken from the request's own time were refused whenever an
        entry with a later time was already there (concurrent requests, gateway replicas with skewed clocks),
        and the entry was lost. The request's time is kept as a field.
        """
        fields: dict[Any, Any] = {name: str(value) for name in _FIELDS if (value := getattr(entry, name)) is not None}
        fields["time_ms"] = str(int(entry.time.timestamp() * 1000))
        min_id = max(0, int(time.time() * 1000) - int(self.retention.total_seconds() * 1000))
        entry_id = self.redis.xadd(self.key, fields, id="*", minid=min_id, approximate=False)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def query(
        self,
        *,
        owner: str | None = None,
        key_id: str | None = None,
        action: str | None = None,
        on_behalf_of: str | None = None,
        before: str | None = None,
        limit: int = 100,
        scan: int = 5000,
    ) -> AuditPage:
        """Entries newest first, filtered; at most ``scan`` stream entries are read per call (then page on)."""
        upper = f"({before}" if before else "+"
        raw = cast(list[tuple[bytes, dict[bytes, bytes]]], self.redis.xrevrange(self.key, upper, "-", count=scan))
        entries: list[AuditEntry] = []
        last: str | None = None
        for entry_id, fields in raw:
            last = entry_id.decode()
            values = {k.decode(): v.decode() for k, v in fields.items()}
            if owner is not None and values.get("owner") != owner:
                continue
            if key_id is not None and values.get("key_id") != key_id:
                continue
            if action is not None and action not in values.get("action", ""):
                continue
            if on_behalf_of is not None and values.get("on_behalf_of") != on_behalf_of:
                continue
            millis = int(values.pop("time_ms", last.split("-")[0]))
            entries.append(
                AuditEntry.model_validate({**values, "id": last, "time": datetime.fromtimestamp(millis / 1000, UTC)})
            )
            if len(entries) == limit:
                return AuditPage(entries=entries, next_before=last)
        return AuditPage(entries=entries, next_before=last if len(raw) == scan else None)
