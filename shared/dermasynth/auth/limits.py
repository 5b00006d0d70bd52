"""Per-key rate limits in Redis: a fixed one-minute window per API key, shared by every gateway replica."""

from __future__ import annotations

import time

import redis


class RateLimiter:
    """Counts each key's requests in the current minute (``P:rate:{key_id}:{minute}``, expiring)."""

    def __init__(self, client: redis.Redis, prefix: str, per_minute: int) -> None:
        self.redis = client
        self.prefix = prefix
        self.per_minute = per_minute

    def hit(self, key_id: str, now: float | None = None) -> int | None:
        """Count one request of ``key_id``; None when it is within the limit, else the seconds to wait."""
        if self.per_minute <= 0:
            return None
        now = time.time() if now is None else now
        window = int(now // 60)
        counter = f"{self.prefix}:rate:{key_id}:{window}"
        pipe = self.redis.pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count, _ = pipe.execute()
        if int(count) <= self.per_minute:
            return None
        return max(1, int((window + 1) * 60 - now + 0.999))
