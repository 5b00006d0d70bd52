"""Process logging: plain text for people or one JSON object a line for log collectors (issue 15).

``configure_logging(settings)`` is called once by each service's entry point (the gateway's lifespan, the
worker's Celery ``setup_logging`` signal) with ``DERMASYNTH_LOG_LEVEL`` and ``DERMASYNTH_LOG_FORMAT``
(``text`` | ``json``). It installs a handler on the root logger only when none is there (so test runners
keep theirs) and, for JSON, re-formats the handlers uvicorn and Celery installed themselves.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from dermasynth.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# loggers that servers configure with handlers of their own before our entry point runs
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker")
# attributes every LogRecord has; anything else was passed with ``extra=`` and goes into the JSON object
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the ``extra=`` fields, and the
    traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings) -> None:
    """Log at ``settings.log_level`` in ``settings.log_format`` to stderr."""
    formatter = make_formatter(settings.log_format)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=settings.log_level, handlers=[handler])  # no-op where a handler exists
    logging.getLogger().setLevel(settings.log_level)
    if settings.log_format == "json":
        for name in SERVER_LOGGERS:
            for server_handler in logging.getLogger(name).handlers:
                server_handler.setFormatter(formatter)
