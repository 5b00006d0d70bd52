"""A platform whose gateway serves predictions from the session's tritonserver and model repository."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from dermasynth.auth import Scope
from dermasynth.config import Settings
from services.gateway.app import create_app
from services.gateway.services import Services
from tests.services.platform import Platform
from tests.triton_fixtures import Served


def serving_redis(redis_url: str) -> str:
    """Serving tests keep their Redis keys on DB 12."""
    return redis_url.rsplit("/", 1)[0] + "/12"


@dataclass
class ServingPlatform(Platform):
    """A :class:`Platform` whose store is the serving store and whose gateway talks to ``triton_url``."""

    triton_url: str = ""
    store_root: Path = field(default_factory=Path)

    @property
    def env(self) -> dict[str, str]:
        return {
            **super().env,
            "DERMASYNTH_TRITON_URL": self.triton_url,
            "DERMASYNTH_STORE_ROOT": str(self.store_root),
            "DERMASYNTH_DEPLOY_SETTLE_S": "1",
            "DERMASYNTH_MAX_PREDICTION_IMAGES": "8",
            # load tests stream thousands of requests a minute with one key; the limit has its own test
            "DERMASYNTH_RATE_LIMIT_PER_MINUTE": "0",
        }

    @property
    def settings(self) -> Settings:
        return super().settings.model_copy(
            update={
                "triton_url": self.triton_url,
                "store_root": self.store_root,
                "deploy_settle_s": 1.0,
                "max_prediction_images": 8,
            }
        )

    def headers(self, *scopes: Scope) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(*scopes)}"}

    @contextmanager
    def in_process(self, **changes: object) -> Iterator[TestClient]:
        """The gateway app in this process (lifespan run), with settings changed by ``changes``."""
        services = Services.from_settings(self.settings.model_copy(update=changes))
        try:
            with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
                yield client
        finally:
            services.close()


@contextmanager
def serving_platform(served: Served, redis_url: str, root: Path) -> Iterator[ServingPlatform]:
    """A :class:`ServingPlatform` on the session's tritonserver and model store, in ``root``; closed afterwards."""
    deployment = ServingPlatform(
        serving_redis(redis_url), root, triton_url=served.triton.url, store_root=served.store.root
    )
    try:
        yield deployment
    finally:
        deployment.close()
