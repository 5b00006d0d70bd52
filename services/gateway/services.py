"""The clients one gateway process shares between requests, built once at startup from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import redis

from dermasynth.auth import RedisApiKeyStore
from dermasynth.auth.audit import AuditLog
from dermasynth.auth.limits import RateLimiter
from dermasynth.config import Settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs import RedisJobStore
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.storage import ObjectStore, open_store


@dataclass
class Services:
    """Everything a handler may need; reached through the dependencies in :mod:`services.gateway.deps`."""

    settings: Settings
    redis: redis.Redis
    jobs: RedisJobStore
    keys: RedisApiKeyStore
    store: ObjectStore
    registry: DatasetCatalog
    dispatcher: CeleryDispatcher
    rate_limiter: RateLimiter
    audit: AuditLog

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Connect to Redis, the object store and the broker named in ``settings``."""
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        store = open_store(settings)
        return cls(
            settings=settings,
            redis=client,
            jobs=RedisJobStore(client, settings.job_key_prefix, max_log_lines=settings.job_log_lines),
            keys=RedisApiKeyStore(client, settings.api_key_pepper.get_secret_value(), settings.job_key_prefix),
            store=store,
            registry=DatasetCatalog(store, settings.cache_root),
            dispatcher=CeleryDispatcher(make_celery(settings, "dermasynth-gateway")),
            rate_limiter=RateLimiter(client, settings.job_key_prefix, settings.rate_limit_per_minute),
            audit=AuditLog(client, settings.job_key_prefix, timedelta(days=settings.audit_retention_days)),
        )

    def close(self) -> None:
        """Release connections."""
        self.redis.close()
        self.dispatcher.app.close()
