"""Domain errors become HTTP errors here, at the edge, always as JSON ``{"detail": ..., "reason": ...}``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import redis
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError

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

Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]
_TOO_LARGE_REASONS = frozenset({"zip_bomb", "too_many_files", "too_large"})


def _error(status_code: int, detail: str, reason: str, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, "reason": reason, **extra}, status_code=status_code)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _error(status.HTTP_404_NOT_FOUND, str(exc), "not_found")


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return _error(status.HTTP_409_CONFLICT, str(exc), "invalid_transition")


async def _archive(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ArchiveRejected)
    code = (
        status.HTTP_413_CONTENT_TOO_LARGE if exc.reason in _TOO_LARGE_REASONS else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    if exc.reason == "forbidden_prefix":
        code = status.HTTP_403_FORBIDDEN
    return _error(code, str(exc), exc.reason)


_REASONS: dict[type[Exception], str] = {
    FormatError: "wrong_layout",
    ManifestError: "bad_manifest",
    UnknownReference: "unknown_reference",
    OverBudget: "over_budget",
    InvalidKey: "invalid_path",
}


async def _unprocessable(_: Request, exc: Exception) -> JSONResponse:
    return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), _REASONS.get(type(exc), "invalid"))


async def _nothing_accepted(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NothingAccepted)
    return _error(
        status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), "no_valid_images", report=exc.report.model_dump(mode="json")
    )


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("backend unavailable: %s", exc)
    return _error(status.HTTP_503_SERVICE_UNAVAILABLE, f"a backend service is unavailable: {exc}", "unavailable")


async def _quota(_: Request, exc: Exception) -> JSONResponse:
    return _error(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), "quota_exceeded")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    logger.exception("unhandled error %s on %s %s", incident, request.method, request.url.path)
    return _error(
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        f"internal error (incident {incident}); the gateway log has the details",
        "internal",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map the library's errors to HTTP statuses."""
    handlers: list[tuple[tuple[type[Exception], ...], Handler]] = [
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
