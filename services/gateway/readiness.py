"""Readiness checks: ``GET /v1/health/ready`` runs every check registered on the app.

The gateway registers ``redis`` and ``store``. Other parts add theirs in ``create_app`` with
:func:`register_ready_check`, e.g. the inference client's Triton check::

    register_ready_check(app, "triton", inference_client.check_ready)

A check is a plain callable that returns (its return value is ignored) when its service is usable and
raises (any exception, whose message is reported) when it is not; it runs in a worker thread under a
timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

ReadyCheck = Callable[[], object]


def register_ready_check(app: FastAPI, name: str, check: ReadyCheck) -> None:
    """Make ``/v1/health/ready`` also require ``check`` to pass."""
    checks: dict[str, ReadyCheck] = app.state.ready_checks
    checks[name] = check


def ready_checks(app: FastAPI) -> dict[str, ReadyCheck]:
    """The checks registered on ``app``."""
    checks: dict[str, ReadyCheck] = app.state.ready_checks
    return checks
