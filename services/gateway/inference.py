"""The gateway's inference side: Triton client, model registry, predictor, deployer, and their upkeep.

Built in the app's lifespan (the async Triton client belongs to the server's event loop) by
:func:`serve_inference`, which also registers the ``triton`` readiness check and runs a small
background loop: it reloads the live version of every model whenever Triton answers but does not have
it loaded (e.g. after a Triton restart), so the gateway recovers by itself, and it purges retained
prediction images whose period ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Request

from dermasynth.config import Settings
from dermasynth.serving.explain import Explainer
from dermasynth.serving.inference_client import TritonClient
from dermasynth.serving.prediction import Predictor
from dermasynth.serving.registry import Deployer, ModelRegistry
from dermasynth.serving.retention import Retention
from dermasynth.storage import ObjectStore
from services.gateway.readiness import register_ready_check

logger = logging.getLogger(__name__)

UPKEEP_INTERVAL_S = 5.0
PURGE_INTERVAL_S = 3600.0


@dataclass
class Inference:
    """What the predictions and models routers use."""

    settings: Settings
    client: TritonClient
    registry: ModelRegistry
    predictor: Predictor
    deployer: Deployer
    retention: Retention

    @classmethod
    def build(cls, settings: Settings, store: ObjectStore) -> Inference:
        """Clients for ``settings``; call inside the event loop that will use them."""
        client = TritonClient(
            settings.triton_url,
            timeout_s=settings.triton_timeout_s,
            admin_key=settings.triton_admin_key.get_secret_value() if settings.triton_admin_key else None,
        )
        registry = ModelRegistry(store)
        retention = Retention(store, settings.prediction_retention_days)
        predictor = Predictor(
            client,
            registry,
            default_model=settings.serving_model,
            max_images=settings.max_prediction_images,
            max_pixels=min(settings.max_prediction_image_pixels, settings.max_image_pixels),
            retention=retention,
            explainer=Explainer(registry.repository),
            max_request_pixels=settings.max_prediction_request_pixels,
            max_explained=settings.max_explained_images,
        )
        deployer = Deployer(
            registry, client, settle_s=settings.deploy_settle_s, instance_kind=settings.serving_instance_kind
        )
        return cls(settings, client, registry, predictor, deployer, retention)

    async def restore_live_models(self) -> list[str]:
        """Load the live version of each model Triton is missing; returns the models it (re)loaded."""
        if not await self.client.server_ready():
            return []
        restored = []
        for name in await asyncio.to_thread(self.registry.names):
            live = await asyncio.to_thread(self.registry.live, name)
            if live.version is None or await self.client.model_ready(name, live.version):
                continue
            await self.client.load_model(name)
            logger.info("loaded %s version %d on Triton (it was not loaded)", name, live.version)
            restored.append(name)
        return restored

    async def upkeep(self) -> None:
        """Forever: restore live models, purge expired retained images; errors are logged, never raised."""
        last_purge = -PURGE_INTERVAL_S
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.restore_live_models()
                if loop.time() - last_purge >= PURGE_INTERVAL_S:
                    await asyncio.to_thread(self.retention.purge)
                    last_purge = loop.time()
            except Exception as exc:  # upkeep must outlive any backend failure
                logger.warning("inference upkeep failed, retrying in %.0f s: %s", UPKEEP_INTERVAL_S, exc)
            await asyncio.sleep(UPKEEP_INTERVAL_S)


def triton_ready_check(url: str) -> Callable[[], None]:
    """A readiness check (run in a worker thread) that raises unless Triton answers ready."""

    def check() -> None:
        response = httpx.get(f"http://{url}/v2/health/ready", timeout=3)
        if response.status_code != 200:
            raise RuntimeError(f"Triton at {url} answers {response.status_code} on /v2/health/ready")

    return check


@contextlib.asynccontextmanager
async def serve_inference(app: FastAPI, settings: Settings, store: ObjectStore) -> AsyncIterator[Inference]:
    """Attach :class:`Inference` to ``app`` for the app's lifetime, with its readiness check and upkeep."""
    inference = Inference.build(settings, store)
    app.state.inference = inference
    register_ready_check(app, "triton", triton_ready_check(settings.triton_url))
    upkeep = asyncio.create_task(inference.upkeep(), name="inference-upkeep")
    try:
        yield inference
    finally:
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        await inference.client.close()


async def get_inference(request: Request) -> Inference:
    """The app's :class:`Inference` (built in the lifespan); async, so FastAPI calls it without a thread hop."""
    inference: Inference = request.app.state.inference
    return inference


InferenceDep = Annotated[Inference, Depends(get_inference)]
