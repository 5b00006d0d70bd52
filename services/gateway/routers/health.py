"""Liveness and readiness: ``/v1/health/live`` (the process answers) and ``/v1/health/ready`` (its backends do)."""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dermasynth.auth import ApiKey
from services.gateway.readiness import ready_checks

router = APIRouter(prefix="/v1/health", tags=["health"])

CHECK_TIMEOUT_S = 5.0


class Liveness(BaseModel):
    status: Literal["live"] = "live"


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, str] = Field(
        default_factory=dict, description="each backend's state; only for admin keys (errors name hosts)"
    )


@router.get("/live", response_model=Liveness, summary="The gateway process answers")
def live() -> Liveness:
    return Liveness()


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Redis, the object store and Triton answer (each check's detail for admin keys only)",
    responses={503: {"model": Readiness, "description": "a backend does not answer"}},
)
async def ready(request: Request) -> JSONResponse:
    results: dict[str, str] = {}
    for name, check in ready_checks(request.app).items():
        try:
            with anyio.fail_after(CHECK_TIMEOUT_S):
                await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
            results[name] = "ok"
        except TimeoutError:
            results[name] = f"no answer within {CHECK_TIMEOUT_S:.0f} s"
        except Exception as exc:  # any failure of a backend means: not ready, and why
            results[name] = f"{type(exc).__name__}: {exc}"
    healthy = all(result == "ok" for result in results.values())
    key = request.scope.get("state", {}).get("api_key")
    detail = isinstance(key, ApiKey) and key.admin
    body = Readiness(status="ready" if healthy else "unready", checks=results if detail else {})
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
