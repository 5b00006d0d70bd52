"""Prometheus metrics of one gateway: requests by route, job submissions, and queue lengths at scrape time.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (``app.state.metrics.registry``), so
several apps can live in one process (tests) and routers added later can register their own metrics
on it: ``Counter("dermasynth_predictions_total", "...", registry=app.state.metrics.registry)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dermasynth.auth import ApiKey
from services.gateway.errors import problem_response


class QueueLengthCollector(Collector):
    """Read when Prometheus scrapes: ``dermasynth_queue_length{queue}`` (messages waiting per Celery queue)
    and ``dermasynth_queue_jobs{queue,state}`` (``queued``: the same; ``running``: jobs holding a lease,
    from ``P:jobs:running:{queue}``), what an autoscaler scales the workers of a queue on."""

    def __init__(self, read: Callable[[], dict[str, int]], running: Callable[[], dict[str, int]] | None = None) -> None:
        self.read = read
        self.running = running

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("dermasynth_queue_length", "Jobs waiting on each queue", labels=["queue"])
        jobs = GaugeMetricFamily(
            "dermasynth_queue_jobs", "Jobs of each queue by state (queued: waiting; running)", labels=["queue", "state"]
        )
        lengths = _read(self.read)
        for queue, length in sorted(lengths.items()):
            family.add_metric([queue], length)
            jobs.add_metric([queue, "queued"], length)
        for queue, count in sorted(_read(self.running).items()):
            jobs.add_metric([queue, "running"], count)
        yield family
        yield jobs


def _read(read: Callable[[], dict[str, int]] | None) -> dict[str, int]:
    if read is None:
        return {}
    try:
        return read()
    except Exception:  # the broker is down: report nothing rather than failing the whole scrape
        return {}


class GatewayMetrics:
    """The gateway's metric objects, on the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "dermasynth_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dermasynth_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.jobs_submitted = Counter(
            "dermasynth_jobs_submitted_total", "Jobs accepted by kind", ["kind"], registry=self.registry
        )

    def watch_queues(
        self, read: Callable[[], dict[str, int]], running: Callable[[], dict[str, int]] | None = None
    ) -> None:
        """Also export the queue lengths ``read`` returns (and the running jobs ``running`` counts)."""
        self.registry.register(QueueLengthCollector(read, running))


class ObserveRequests:
    """ASGI middleware counting and timing every HTTP request by method, route template and status.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs each
    request in a task group of its own, CPU that every prediction would pay.
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            # the router has put the matched route in the scope: its path template keeps the labels few
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, metrics: GatewayMetrics) -> None:
    """Count and time every request, and serve ``GET /metrics`` in the Prometheus text format."""
    app.state.metrics = metrics
    app.add_middleware(ObserveRequests, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """On the public port only for admin keys; Prometheus scrapes the internal port instead."""
        key = request.scope.get("state", {}).get("api_key")
        if not isinstance(key, ApiKey) or not key.admin:
            return problem_response(
                403,
                "forbidden",
                "/metrics on this port needs an admin key; Prometheus scrapes the internal port "
                "(DERMASYNTH_GATEWAY_INTERNAL_PORT)",
                instance=request.url.path,
            )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class InternalServer(Protocol):
    def shutdown(self) -> None: ...


def serve_internal_metrics(app: FastAPI, port: int) -> InternalServer | None:
    """Serve the app's metrics on ``port`` (a port that is not exposed outside the cluster); None when 0."""
    if port == 0:
        return None
    server, _ = start_http_server(port, registry=app.state.metrics.registry)
    return server
