"""The clients one worker process shares between jobs, built on first use (after any fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis

from dermasynth.config import Settings, get_settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs import RedisJobStore
from dermasynth.storage import ObjectStore, open_store


@dataclass(frozen=True)
class WorkerResources:
    """Settings, job store, object store and dataset registry of this process."""

    settings: Settings
    jobs: RedisJobStore
    store: ObjectStore
    registry: DatasetCatalog


@lru_cache(maxsize=1)
def worker_resources() -> WorkerResources:
    """This process's resources, from ``DERMASYNTH_*`` settings."""
    settings = get_settings()
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30
    )
    store = open_store(settings)
    return WorkerResources(
        settings=settings,
        jobs=RedisJobStore(client, settings.job_key_prefix, max_log_lines=settings.job_log_lines),
        store=store,
        registry=DatasetCatalog(store, settings.cache_root),
    )
