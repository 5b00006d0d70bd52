"""The audit trail (admin keys): who did what, when, to which resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dermasynth.auth import OWNER_PATTERN
from dermasynth.auth.audit import PERSON_PATTERN, AuditPage
from services.gateway.deps import AdminKey, ServicesDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "",
    response_model=AuditPage,
    responses={401: {"description": "no valid API key"}, 403: {"description": "the key lacks the admin scope"}},
    summary="Audit entries newest first, filtered by owner, key, action or person; page with ?before=<next_before>",
)
def audit_entries(
    _: AdminKey,
    services: ServicesDep,
    owner: Annotated[str | None, Query(pattern=OWNER_PATTERN)] = None,
    key_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{12}$")] = None,
    action: Annotated[str | None, Query(max_length=200, description="a part of 'METHOD /route'")] = None,
    on_behalf_of: Annotated[
        str | None, Query(pattern=PERSON_PATTERN, description="the person a delegate key acted for (exact)")
    ] = None,
    before: Annotated[str | None, Query(pattern=r"^\d{1,20}-\d{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    return services.audit.query(
        owner=owner, key_id=key_id, action=action, on_behalf_of=on_behalf_of, before=before, limit=limit
    )
