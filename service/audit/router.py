"""GET /v1/audit: the audit log, for admins."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel

from service.audit import service
from service.auth import Admin, SessionDep
from service.db import MAX_BIGINT
from service.schema_rules import refuse_nul

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEntryRead(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    client: str
    action: str
    subject: str | None
    reason: str | None
    # A refusal's HTTP status. None on the entry a request writes as its key is admitted: a
    # request refused after that (a read's 404) has a second entry, "refused …", with it.
    status: int | None


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AuditEntryRead]


@router.get("", response_model=AuditPage)
def read_audit_log(
    session: SessionDep,
    _admin: Admin,
    actor: Annotated[str | None, Query(max_length=100), AfterValidator(refuse_nul)] = None,
    action: Annotated[str | None, Query(max_length=120), AfterValidator(refuse_nul)] = None,
    subject: Annotated[str | None, Query(max_length=200), AfterValidator(refuse_nul)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
    reads: bool = True,
    up_to: Annotated[int | None, Query(ge=1, le=MAX_BIGINT)] = None,
) -> AuditPage:
    """Newest first. Every staff request is here (who, role, address, what, about what), those
    refused with their status and why, and every reveal of a citizen's contacts with its
    stated reason."""
    total, items = service.read(
        session,
        actor=actor,
        action=action,
        subject=subject,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
        reads=reads,
        up_to=up_to,
    )
    return AuditPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AuditEntryRead.model_validate(e, from_attributes=True) for e in items],
    )
