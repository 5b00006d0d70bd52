"""Which failures are worth a retry: storage and network hiccups only; everything else fails the job at once."""

from __future__ import annotations

import redis
import urllib3.exceptions
from minio.error import S3Error, ServerError

# S3 error codes that mean "try again", not "this request is wrong".
_TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed"}
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage or network failure that may pass if the job is retried."""
    if isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | redis.ConnectionError
        | redis.TimeoutError
        | urllib3.exceptions.HTTPError
        | ServerError,
    ):
        return True
    return isinstance(exc, S3Error) and exc.code in _TRANSIENT_S3_CODES


def describe(exc: BaseException) -> str:
    """A one-line error for the job record: the type and message (a validation error lists each problem)."""
    message = str(exc).strip().replace("\n", "; ") or repr(exc)
    return f"{type(exc).__name__}: {message}"
