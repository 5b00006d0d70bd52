"""``Idempotency-Key`` on ``POST /v1/jobs`` and ``POST /v1/datasets``: a retried request gets the first
answer back instead of queueing a second GPU job or storing a second dataset.

The first request with a key (per API key and endpoint) marks the key *pending* in Redis, runs, and
stores its answer (status, body, ``Location``) for ``DERMASYNTH_IDEMPOTENCY_TTL_S``; a request with the
same key then gets that answer again, with ``Idempotent-Replayed: true``. The key is bound to the
request's content (a SHA-256 of its body): the same key with another body is refused (422
``idempotency_key_reused``), and a retry while the first request still runs is told so (409
``idempotency_in_progress``; retry after it). A request that fails leaves no answer behind, so its
retry runs again. Follows the IETF ``Idempotency-Key`` header draft.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, BinaryIO

import redis
from fastapi import Depends, Header, status
from fastapi.responses import JSONResponse

from services.gateway.deps import ServicesDep
from services.gateway.errors import problem

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")
PENDING_TTL_S = 15 * 60
"""How long a key stays pending if its gateway dies mid-request (longer than the largest upload takes)."""
_CHUNK = 1 << 20


def fingerprint(*parts: str | bytes, stream: BinaryIO | None = None) -> str:
    """SHA-256 over ``parts`` and then ``stream`` (read to its end and rewound)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    if stream is not None:
        stream.seek(0)
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
        stream.seek(0)
    return digest.hexdigest()


@dataclass
class Slot:
    """One request's use of a key: ``replay`` is the first answer when there was one; else call :meth:`save`."""

    store: IdempotencyStore | None
    redis_key: str = ""
    fingerprint: str = ""
    replay: JSONResponse | None = None
    saved: bool = field(default=False, init=False)

    def save(self, status_code: int, body: str, headers: dict[str, str] | None = None) -> None:
        """Keep this answer (a JSON body) for the key's retries."""
        if self.store is None:
            return
        answer = {
            "state": "done",
            "fingerprint": self.fingerprint,
            "status": status_code,
            "body": body,
            "headers": headers or {},
        }
        self.store.redis.set(self.redis_key, json.dumps(answer), ex=self.store.ttl_s)
        self.saved = True


class IdempotencyStore:
    """Answers kept per (API key, endpoint, Idempotency-Key) in Redis under ``P:idempotency:``."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = client, prefix, ttl_s

    def _key(self, caller: str, endpoint: str, key: str) -> str:
        return f"{self.prefix}:idempotency:{caller}:{endpoint}:{key}"

    @contextmanager
    def once(self, key: str | None, caller: str, endpoint: str, print_: str) -> Iterator[Slot]:
        """The slot of this request; without a key, a slot that neither replays nor keeps anything.

        Raises:
            ApiProblem: 422 for a malformed key or a key reused with another body; 409 while the first
                request with the key still runs.
        """
        if key is None:
            yield Slot(None)
            return
        if not KEY_PATTERN.match(key):
            problem(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "invalid_idempotency_key",
                f"{HEADER} must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', '.', ':' (a UUID is best)",
            )
        redis_key = self._key(caller, endpoint, key)
        pending = json.dumps({"state": "pending", "fingerprint": print_})
        if not self.redis.set(redis_key, pending, nx=True, ex=PENDING_TTL_S):
            yield Slot(None, redis_key, print_, replay=self._replay(redis_key, key, print_))
            return
        slot = Slot(self, redis_key, print_)
        try:
            yield slot
        finally:
            if not slot.saved:  # it failed: let a retry run it again
                self.redis.delete(redis_key)

    def _replay(self, redis_key: str, key: str, print_: str) -> JSONResponse:
        raw = self.redis.get(redis_key)
        if raw is None:  # the first request failed just now: the client may retry at once
            problem(
                status.HTTP_409_CONFLICT,
                "idempotency_in_progress",
                f"the first request with {HEADER} {key!r} has just ended without an answer; retry it",
            )
        stored: dict[str, Any] = json.loads(raw)
        if stored["fingerprint"] != print_:
            problem(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "idempotency_key_reused",
                f"{HEADER} {key!r} was already used with another request body; use a new key for a new request",
            )
        if stored["state"] == "pending":
            problem(
                status.HTTP_409_CONFLICT,
                "idempotency_in_progress",
                f"a request with {HEADER} {key!r} is still being processed; retry when it has answered",
                headers={"Retry-After": "2"},
            )
        return JSONResponse(
            json.loads(stored["body"]),
            status_code=int(stored["status"]),
            headers={**stored["headers"], REPLAYED_HEADER: "true"},
        )


async def get_idempotency(services: ServicesDep) -> IdempotencyStore:
    return IdempotencyStore(services.redis, services.settings.job_key_prefix, services.settings.idempotency_ttl_s)


IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="any unique string (a UUID) per logical request: a retry with the same key and body gets "
        "the first answer back (with `Idempotent-Replayed: true`) instead of a second job or dataset",
    ),
]
