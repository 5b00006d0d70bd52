"""The gateway's security edge, as plain ASGI middleware that runs before any handler.

For every request it:

1. finds the API key (``Authorization: Bearer`` or ``X-API-Key``) and checks it **before a byte of the
   body is read**: a request without a valid key is answered 401 without reading its body. The check
   runs in worker threads of its own (:data:`AUTH_THREADS`), so long uploads that fill the shared thread
   pool never stall authentication;
2. applies the key's rate limit (429 with ``Retry-After``);
3. enforces the route's body limit: 413 at once when ``Content-Length`` says too much, and while the
   body streams in otherwise (small for JSON routes, sized for predictions, large only for uploads);
4. takes ``X-DermaSynth-On-Behalf-Of`` (the person the web app acts for) only from keys with the
   ``delegate`` scope: from any other key the request is refused (403 ``delegation_refused``, audited),
   so no one can make the trail name someone else; a malformed value is refused (400) before it can
   reach a log;
5. writes an audit entry (key id, owner, action, resource, status, the person a delegate key acted for;
   the model version and image count for predictions) for every change and every read of job outputs.

Public paths (liveness, readiness without detail, and ``/docs`` when enabled) need no key. The key is
put in ``scope["state"]["api_key"]``, where :func:`services.gateway.deps.authenticate` finds it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import anyio.to_thread
import redis
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dermasynth.auth import ApiKey, KeyRejected
from dermasynth.auth import Scope as KeyScope
from dermasynth.auth.audit import AuditEntry, check_person
from dermasynth.config import Settings
from dermasynth.gateway_client import ON_BEHALF_OF_HEADER
from services.gateway.errors import problem_response

logger = logging.getLogger(__name__)

AUTH_THREADS = 16
"""Threads reserved for key checks, rate limits and audit writes (apart from FastAPI's shared pool)."""
PUBLIC_PATHS = frozenset({"/v1/health/live", "/v1/health/ready"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CHALLENGE = {"WWW-Authenticate": "Bearer"}
MISSING_KEY = (
    "missing API key: send 'Authorization: Bearer <key>' or "
    "'X-API-Key: <key>' (operators issue keys with `dermasynth keys create`)"
)
_AUDITED_READS = re.compile(r"^/v1/(jobs/[^/]+/(artefacts|logs)|audit)")


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """The largest body accepted on this route, and the setting that sets it."""
    if method == "POST" and path.rstrip("/") == "/v1/datasets":
        return settings.max_upload_bytes, "DERMASYNTH_MAX_UPLOAD_BYTES"
    if method == "POST" and path.rstrip("/") == "/v1/predictions":
        return settings.max_prediction_body_bytes, "DERMASYNTH_MAX_PREDICTION_BODY_BYTES"
    return settings.max_json_body_bytes, "DERMASYNTH_MAX_JSON_BODY_BYTES"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def token_of(scope: Scope) -> str | None:
    """The API key a request carries, if any."""
    authorization = _header(scope, b"authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return (_header(scope, b"x-api-key") or "").strip() or None


async def reply(
    scope: Scope, send: Send, status: int, detail: str, reason: str, headers: dict[str, str] | None = None
) -> None:
    """Answer with the gateway's RFC 9457 problem+json shape."""
    response = problem_response(status, reason, detail, instance=scope.get("path"), headers=headers)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class SecurityMiddleware:
    """See the module's description. Reads the app's :class:`~services.gateway.services.Services`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: anyio.CapacityLimiter | None = None

    def _threads(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(AUTH_THREADS)
        return self._limiter

    async def _run(self, call: Callable[[], object]) -> object:
        return await anyio.to_thread.run_sync(call, limiter=self._threads())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        if services is None:  # not started yet
            await reply(scope, send, 503, "the gateway is starting", "unavailable")
            return
        settings: Settings = services.settings
        path, method = scope["path"], scope["method"]
        token = token_of(scope)
        public = path in PUBLIC_PATHS or (settings.docs_enabled and path in DOCS_PATHS)
        state = scope.setdefault("state", {})
        if public and token is None:
            await self._limited(scope, receive, send, settings)
            return
        if token is None:
            await reply(scope, send, 401, MISSING_KEY, "unauthorized", CHALLENGE)
            return
        try:
            key, retry_after = await self._admit(services, token)
        except KeyRejected as exc:
            if public:  # a bad key on a public path: answered as without one
                await self._limited(scope, receive, send, settings)
                return
            await reply(scope, send, 401, f"API key refused: {exc}", "unauthorized", CHALLENGE)
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            await reply(
                scope, send, 503, f"a backend service is unavailable: {exc}", "unavailable", {"Retry-After": "5"}
            )
            return
        if retry_after is not None:
            await reply(
                scope,
                send,
                429,
                f"API key {key.id} sent more than {settings.rate_limit_per_minute} requests this minute "
                f"(DERMASYNTH_RATE_LIMIT_PER_MINUTE); retry in {retry_after} s",
                "rate_limited",
                {"Retry-After": str(retry_after)},
            )
            return
        state["api_key"] = key
        claimed = _header(scope, ON_BEHALF_OF_HEADER.lower().encode())
        if claimed is not None:
            try:
                state["on_behalf_of"] = check_person(claimed)
            except ValueError as exc:
                await reply(scope, send, 400, f"{ON_BEHALF_OF_HEADER}: {exc}", "invalid_on_behalf_of")
                return
            if KeyScope.DELEGATE not in key.scopes:
                state.pop("on_behalf_of")
                await reply(
                    scope,
                    send,
                    403,
                    f"API key {key.id} may not act for another person ({ON_BEHALF_OF_HEADER}): only keys with the "
                    "delegate scope may (the web app's service key: `dermasynth keys create ... --scope delegate`); "
                    "send the request without that header",
                    "delegation_refused",
                )
                await self._audit(services, scope, key, 403)
                return
        status = await self._limited(scope, receive, send, settings)
        if method not in ("GET", "HEAD") or _AUDITED_READS.match(path):
            await self._audit(services, scope, key, status)

    async def _admit(self, services: object, token: str) -> tuple[ApiKey, int | None]:
        def admit() -> tuple[ApiKey, int | None]:
            key = services.keys.authenticate(token)  # type: ignore[attr-defined]
            return key, services.rate_limiter.hit(key.id)  # type: ignore[attr-defined]

        return await anyio.to_thread.run_sync(admit, limiter=self._threads())

    async def _limited(self, scope: Scope, receive: Receive, send: Send, settings: Settings) -> int:
        """Run the app under the route's body limit; returns the response status.

        A declared ``Content-Length`` over the limit is answered here, saying the limit and its setting;
        a body that streams past it is stopped by Starlette's body limiter (413) as it is read.
        """
        limit, setting = body_limit(settings, scope["method"], scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await reply(
                scope,
                send,
                413,
                f"the request body ({declared} bytes) is larger than the {limit} bytes accepted here ({setting})",
                "too_large",
            )
            return 413
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await RequestBodyLimitMiddleware(self.app, max_body_size=limit)(scope, receive, observed)
        return status

    async def _audit(self, services: object, scope: Scope, key: ApiKey, status: int) -> None:
        route = getattr(scope.get("route"), "path", None) or scope["path"]
        extra = scope.get("state", {}).get("audit", {})
        entry = AuditEntry(
            time=datetime.now(UTC),
            key_id=key.id,
            owner=key.owner,
            action=f"{scope['method']} {route}",
            resource=scope["path"],
            status=status,
            on_behalf_of=scope.get("state", {}).get("on_behalf_of"),
            **extra,
        )
        try:
            await anyio.to_thread.run_sync(services.audit.record, entry, limiter=self._threads())  # type: ignore[attr-defined]
        except redis.RedisError:
            logger.exception("could not write the audit entry %s", entry.model_dump_json())
