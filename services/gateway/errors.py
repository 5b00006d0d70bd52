"""One error shape for the whole API: RFC 9457 ``application/problem+json``, built here at the edge.

Every error answer, whatever raised it (a domain error of the library, a refused key, FastAPI's own
request validation, an unknown route, a body over the size limit, a backend that is down), is::

    {"type": "https://dermasynth.dev/problems/{reason}", "title": "Unprocessable Content", "status": 422,
     "detail": "what was wrong and what is accepted", "reason": "invalid_request", "instance": "/v1/jobs",
     ...extension members, e.g. "errors": [{"loc": [...], "msg": ..., "type": ...}]}

``reason`` is a stable snake_case machine string (clients branch on it; ``type`` is the same as a URI);
``detail`` is for people. Routers raise errors with :func:`problem` (or return :func:`problem_response`);
:func:`install_error_handlers` maps the library's exceptions, and :func:`document_problems` declares the
shape for every error status of every operation in the OpenAPI schema.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, NoReturn

import redis
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dermasynth.auth import KeyNotFound
from dermasynth.data.archives import ArchiveRejected
from dermasynth.data.catalog import DatasetNotFound
from dermasynth.data.formats import FormatError
from dermasynth.data.manifest import ManifestError
from dermasynth.data.uploads import NothingAccepted
from dermasynth.jobs import InvalidTransition, JobNotFound
from dermasynth.jobs.submission import OverBudget, QueueUnavailable, QuotaExceeded, UnknownReference
from dermasynth.storage import InvalidKey, ObjectNotFound

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://dermasynth.dev/problems/"
Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]
_TOO_LARGE_REASONS = frozenset({"zip_bomb", "too_many_files", "too_large"})

# The reason of an HTTPException raised without one (FastAPI's, Starlette's, or a router's).
STATUS_REASONS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
}
DOCUMENTED_STATUSES = ("401", "403", "404", "409", "413", "422", "429", "503")
"""Error statuses every operation's schema declares (with the ones it lists itself)."""
UNDOCUMENTED_PREFIXES = ("/v1/health",)
"""Probes answer their own body (readiness lists each check), not a problem."""


class Problem(BaseModel):
    """An error (RFC 9457 problem details); operations may add extension members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"{PROBLEM_TYPE_BASE}{{reason}}", examples=[f"{PROBLEM_TYPE_BASE}not_found"])
    title: str = Field(description="the HTTP status phrase", examples=["Not Found"])
    status: int = Field(description="the HTTP status code", examples=[404])
    detail: str = Field(description="what was wrong and what is accepted, for people")
    reason: str = Field(description="a stable snake_case machine string, e.g. 'not_found', 'invalid_request'")
    instance: str | None = Field(default=None, description="the request path")


class ApiProblem(Exception):
    """An error to answer as problem+json; raise it with :func:`problem`."""

    def __init__(
        self, status: int, reason: str, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem(
    status: int, reason: str, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> NoReturn:
    """Stop the request with a problem+json answer (``reason``: stable snake_case; ``detail``: for people)."""
    raise ApiProblem(status, reason, detail, headers=headers, **extra)


def problem_response(
    status: int,
    reason: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The problem+json answer itself (for handlers that return rather than raise)."""
    body: dict[str, Any] = {
        **extra,
        "type": f"{PROBLEM_TYPE_BASE}{reason}",
        "title": _phrase(status),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    if instance is not None:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _answer(request: Request, status: int, reason: str, detail: str, **extra: Any) -> JSONResponse:
    return problem_response(status, reason, detail, instance=request.url.path, **extra)


async def _api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        exc.status, exc.reason, exc.detail, instance=request.url.path, headers=exc.headers, **exc.extra
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = STATUS_REASONS.get(exc.status_code, "error")
    detail: Any = exc.detail
    extra: dict[str, Any] = {}
    if isinstance(detail, dict):  # HTTPException(detail={"reason": ..., "detail": ..., ...})
        extra = {k: v for k, v in detail.items() if k not in ("reason", "detail")}
        reason, detail = str(detail.get("reason", reason)), detail.get("detail", "")
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = (
            "the request body could not be parsed: send well-formed JSON (application/json) or "
            "multipart/form-data, as the operation documents"
        )
    elif exc.status_code == 404 and detail == "Not Found":
        detail = f"no such path: {request.method} {request.url.path} (the API is described at /docs)"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        exc.status_code, reason, str(detail), instance=request.url.path, headers=exc.headers or {}, **extra
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")), "type": error["type"]}
        for error in exc.errors()
    ]
    listed = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors[:10])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return _answer(
        request,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        "invalid_request",
        f"the request is invalid: {listed}{more}",
        errors=errors,
    )


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return _answer(request, status.HTTP_404_NOT_FOUND, "not_found", str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return _answer(request, status.HTTP_409_CONFLICT, "invalid_transition", str(exc))


async def _archive(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ArchiveRejected)
    code = (
        status.HTTP_413_CONTENT_TOO_LARGE if exc.reason in _TOO_LARGE_REASONS else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    if exc.reason == "forbidden_prefix":
        code = status.HTTP_403_FORBIDDEN
    return _answer(request, code, exc.reason, str(exc))


_REASONS: dict[type[Exception], str] = {
    FormatError: "wrong_layout",
    ManifestError: "bad_manifest",
    UnknownReference: "unknown_reference",
    OverBudget: "over_budget",
    InvalidKey: "invalid_path",
}


async def _unprocessable(request: Request, exc: Exception) -> JSONResponse:
    return _answer(request, status.HTTP_422_UNPROCESSABLE_CONTENT, _REASONS.get(type(exc), "invalid"), str(exc))


async def _nothing_accepted(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NothingAccepted)
    return _answer(
        request,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        "no_valid_images",
        str(exc),
        report=exc.report.model_dump(mode="json"),
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("backend unavailable: %s", exc)
    return _answer(
        request,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "unavailable",
        f"a backend service is unavailable: {exc}; try again shortly",
        headers={"Retry-After": "5"},
    )


async def _quota(request: Request, exc: Exception) -> JSONResponse:
    return _answer(request, status.HTTP_429_TOO_MANY_REQUESTS, "quota_exceeded", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    logger.exception("unhandled error %s on %s %s", incident, request.method, request.url.path)
    return _answer(
        request,
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        "internal",
        f"internal error (incident {incident}); the gateway log has the details",
        incident=incident,
    )


class PlainErrorsAsProblems:
    """Outermost ASGI layer: an error answered as plain text by a layer outside the app's exception
    handlers (Starlette's request-body limit, which answers ``413 Content Too Large`` itself) is
    rewritten as problem+json."""

    def __init__(self, app: ASGIApp, max_body_size: int | None) -> None:
        self.app, self.max_body_size = app, max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_problem(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if message["status"] >= 400 and headers.get("content-type", "").startswith("text/plain"):
                    rewriting = True
                    response = self._problem(scope, message["status"])
                    headers["content-type"] = PROBLEM_MEDIA_TYPE
                    headers["content-length"] = str(len(response.body))
                    await send(message)
                    await send({"type": "http.response.body", "body": response.body, "more_body": False})
                    return
            elif rewriting:
                return  # the plain-text body is replaced
            await send(message)

        await self.app(scope, receive, send_problem)

    def _problem(self, scope: Scope, status_code: int) -> JSONResponse:
        path = str(scope.get("path", ""))
        if status_code == 413:
            limit = f"the {self.max_body_size} bytes accepted" if self.max_body_size else "the size accepted"
            detail = f"the request body is larger than {limit} (DERMASYNTH_MAX_UPLOAD_BYTES)"
        else:
            detail = f"the request was refused: {_phrase(status_code)}"
        return problem_response(status_code, STATUS_REASONS.get(status_code, "error"), detail, instance=path)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json and declare that shape in the OpenAPI schema."""
    handlers: list[tuple[tuple[type[Exception], ...], Handler]] = [
        ((ApiProblem,), _api_problem),
        ((StarletteHTTPException,), _http_exception),
        ((RequestValidationError,), _validation),
        ((JobNotFound, DatasetNotFound, KeyNotFound, ObjectNotFound), _not_found),
        ((InvalidTransition,), _conflict),
        ((ArchiveRejected,), _archive),
        ((FormatError, ManifestError, UnknownReference, OverBudget, InvalidKey), _unprocessable),
        ((NothingAccepted,), _nothing_accepted),
        ((QuotaExceeded,), _quota),
        ((redis.ConnectionError, redis.TimeoutError, OperationalError, QueueUnavailable), _unavailable),
        ((Exception,), _unexpected),
    ]
    for kinds, handler in handlers:
        for kind in kinds:
            app.add_exception_handler(kind, handler)
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: PlainErrorsAsProblems(build(), app.max_body_size)  # type: ignore[method-assign]
    document_problems(app)


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI schema say that every error (4xx/5xx) of every operation is a :class:`Problem`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        ref = {"$ref": "#/components/schemas/Problem"}
        validation = {"$ref": "#/components/schemas/HTTPValidationError"}
        for route, path in schema.get("paths", {}).items():
            if route.startswith(UNDOCUMENTED_PREFIXES):
                continue
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                for code in DOCUMENTED_STATUSES:
                    responses.setdefault(code, {"description": _phrase(int(code))})
                for code, response in responses.items():
                    if code[0] in "45":
                        extra = response.get("content", {}).get("application/json", {}).get("schema")
                        schema_of = {"allOf": [ref, extra]} if extra and extra != validation else ref
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": schema_of}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
