"""The gateway's app factory: ``uvicorn services.gateway.app:create_app --factory``.

Extension points for other routers (predictions, models):
- include the router below, next to the others;
- protect it with ``EngineerKey`` / ``ClinicianKey`` or ``require_scope(...)`` from ``services.gateway.deps``;
- add what it needs to :class:`~services.gateway.services.Services` (built once in the lifespan);
- register readiness checks with :func:`~services.gateway.readiness.register_ready_check`
  (e.g. Triton's) and metrics on ``app.state.metrics.registry``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dermasynth.config import Settings, get_settings
from dermasynth.jobs.queues import QUEUES
from dermasynth.logs import configure_logging
from services.gateway.errors import install_error_handlers
from services.gateway.inference import serve_inference
from services.gateway.metrics import GatewayMetrics, install_metrics, serve_internal_metrics
from services.gateway.middleware import SecurityMiddleware
from services.gateway.readiness import register_ready_check
from services.gateway.routers import audit, datasets, health, jobs, models, predictions
from services.gateway.services import Services

logger = logging.getLogger(__name__)

DESCRIPTION = """DermaSynth's HTTP API: datasets, GAN synthesis, training, evaluation and experiment jobs.

Authenticate with an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`), issued by an
operator with `dermasynth keys create --owner TEAM`. Engineer keys reach their owner's datasets, jobs
and models; deployer keys change which version is live; clinician keys reach predictions; admin keys
reach everything and the audit trail. Every error is RFC 9457 `application/problem+json`: `{"type",
"title", "status", "detail", "reason", "instance"}`, `reason` a stable machine string (`type` is
`https://dermasynth.dev/problems/{reason}`). `POST /v1/jobs` and `POST /v1/datasets` take an
`Idempotency-Key` header: a retried request gets the first answer back instead of a second job.

DermaSynth is research software, not a medical device."""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the gateway.

    Args:
        settings: defaults to the services' settings, else the process settings (``DERMASYNTH_*``).
        services: clients to use, attached at once (tests); by default they are built from the settings
            when the app starts and closed when it stops.
    """
    settings = settings or (services.settings if services is not None else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            async with serve_inference(app, services.settings, services.store):
                yield
            return
        configure_logging(settings)
        built = Services.from_settings(settings)
        attach_services(app, built)
        logger.info("gateway ready: store=%s redis=%s", settings.store, settings.redis_url.rsplit("@", 1)[-1])
        internal = serve_internal_metrics(app, settings.gateway_internal_port)
        try:
            async with serve_inference(app, settings, built.store):
                yield
        finally:
            if internal is not None:
                internal.shutdown()
            built.close()

    docs = settings.docs_enabled
    app = FastAPI(
        title="DermaSynth",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.ready_checks = {}
    app.add_middleware(SecurityMiddleware)  # inside the metrics middleware: refused requests are counted too
    install_metrics(app, GatewayMetrics())
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(predictions.router)
    app.include_router(audit.router)
    if services is not None:
        attach_services(app, services)
    return app


def attach_services(app: FastAPI, services: Services) -> None:
    """Make ``services`` the app's clients, with their readiness checks and queue metrics."""
    app.state.services = services
    register_ready_check(app, "redis", services.jobs.ping)
    register_ready_check(app, "store", lambda: services.store.exists("catalog/ready-probe"))
    app.state.metrics.watch_queues(services.dispatcher.queue_lengths, lambda: services.jobs.running_counts(QUEUES))
