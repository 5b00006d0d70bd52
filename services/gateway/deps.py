"""Dependencies as typed aliases: handlers declare what they need (``jobs: JobStoreDep``, ``key: EngineerKey``).

The accessors are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, and
a thread hop per accessor is CPU that every request pays. ``authenticate`` stays ``def``: it reads Redis.
Routers added later reuse these: ``EngineerKey`` / ``ClinicianKey`` (or ``require_scope(...)``) for
authentication and scopes, ``SettingsDep``, ``StoreDep``, ``RegistryDep`` and ``JobStoreDep`` for the
shared clients, ``MetricsDep`` for the app's Prometheus registry. Tests replace any of them with
``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from dermasynth.auth import ApiKey, RedisApiKeyStore, Scope
from dermasynth.config import Settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs import RedisJobStore
from dermasynth.jobs.queues import CeleryDispatcher
from dermasynth.storage import ObjectStore
from services.gateway.metrics import GatewayMetrics
from services.gateway.middleware import MISSING_KEY
from services.gateway.services import Services


async def get_metrics(request: Request) -> GatewayMetrics:
    """The app's Prometheus metrics."""
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]


async def get_services(request: Request) -> Services:
    """The process's shared clients (built in the app's lifespan)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


async def get_store(services: ServicesDep) -> ObjectStore:
    return services.store


async def get_registry(services: ServicesDep) -> DatasetCatalog:
    return services.registry


async def get_jobs(services: ServicesDep) -> RedisJobStore:
    return services.jobs


async def get_keys(services: ServicesDep) -> RedisApiKeyStore:
    return services.keys


async def get_dispatcher(services: ServicesDep) -> CeleryDispatcher:
    return services.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
RegistryDep = Annotated[DatasetCatalog, Depends(get_registry)]
JobStoreDep = Annotated[RedisJobStore, Depends(get_jobs)]
KeyStoreDep = Annotated[RedisApiKeyStore, Depends(get_keys)]
DispatcherDep = Annotated[CeleryDispatcher, Depends(get_dispatcher)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `dermasynth keys create`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same API key, as a header")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    header: Annotated[str | None, Security(_header)] = None,
) -> ApiKey:
    """The caller's live API key, checked by :class:`~services.gateway.middleware.SecurityMiddleware` before the
    body was read (``Authorization: Bearer`` or ``X-API-Key``); 401 when there is none.

    ``bearer`` and ``header`` are declared so that the OpenAPI schema shows both ways to send the key."""
    key = request.scope.get("state", {}).get("api_key")
    if not isinstance(key, ApiKey):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_KEY, _CHALLENGE)
    return key


CallerDep = Annotated[ApiKey, Depends(authenticate)]


def require_scope(scope: Scope) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """A dependency that lets through keys holding ``scope`` or ``admin`` (403 for other keys, 401 without one)."""

    async def check(key: CallerDep) -> ApiKey:
        if scope not in key.scopes and Scope.ADMIN not in key.scopes:
            held = ", ".join(s.value for s in key.scopes)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"API key {key.id} has the scope(s) {held}; this endpoint needs the {scope.value} scope",
            )
        return key

    check.__name__ = f"require_{scope.value}"
    return check


EngineerKey = Annotated[ApiKey, Depends(require_scope(Scope.ENGINEER))]
ClinicianKey = Annotated[ApiKey, Depends(require_scope(Scope.CLINICIAN))]
DeployerKey = Annotated[ApiKey, Depends(require_scope(Scope.DEPLOYER))]
AdminKey = Annotated[ApiKey, Depends(require_scope(Scope.ADMIN))]
