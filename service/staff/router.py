from typing import Annotated

from fastapi import APIRouter, Path, Request

from service.auth import Admin, SessionDep, Viewer, record_action
from service.db import MAX_BIGINT
from service.staff import service
from service.staff.schemas import StaffKeyCreate, StaffKeyIssued, StaffKeyRead, StaffKeyReissue

router = APIRouter(prefix="/v1/staff", tags=["staff"])


@router.get("/me", response_model=StaffKeyRead)
def whoami(key: Viewer) -> StaffKeyRead:
    return StaffKeyRead.model_validate(key)


@router.get("/keys", response_model=list[StaffKeyRead])
def list_keys(session: SessionDep, _admin: Admin) -> list[StaffKeyRead]:
    return [StaffKeyRead.model_validate(k) for k in service.list_keys(session)]


@router.post("/keys", status_code=201, response_model=StaffKeyIssued)
def create_key(
    request: Request,
    body: StaffKeyCreate,
    session: SessionDep,
    admin: Admin,
) -> StaffKeyIssued:
    issued = service.create_key(
        session,
        name=body.name,
        role=body.role,
        email=body.email,
        days=body.expires_in_days,
        most_days=request.app.state.settings.staff_key_life_days,
        issued_by=admin.name,
    )
    record_action(
        session,
        request,
        admin,
        action="create staff key",
        subject=body.name,
        reason=f"{body.role} until {issued.record.expires_at:%Y-%m-%d}",
    )
    return _issued(issued)


@router.post("/keys/{key_id}/reissue", response_model=StaffKeyIssued)
def reissue_key(
    request: Request,
    key_id: Annotated[int, Path(ge=1, le=MAX_BIGINT)],
    session: SessionDep,
    admin: Admin,
    body: StaffKeyReissue,
) -> StaffKeyIssued:
    """A new secret for the key (the same name, role and e-mail), good for `expires_in_days`
    (by default its last term); the old secret stops at once. The secret is shown only this
    once. 409 when the key is revoked, or its secret is no longer the one `key_prefix` names."""
    issued = service.reissue_key(
        session,
        key_id=key_id,
        replacing=body.key_prefix,
        days=body.expires_in_days,
        most_days=request.app.state.settings.staff_key_life_days,
        issued_by=admin.name,
    )
    record_action(
        session,
        request,
        admin,
        action="reissue staff key",
        subject=issued.record.name,
        reason=f"until {issued.record.expires_at:%Y-%m-%d}",
    )
    return _issued(issued)


def _issued(issued: service.IssuedKey) -> StaffKeyIssued:
    return StaffKeyIssued(**StaffKeyRead.model_validate(issued.record).model_dump(), key=issued.key)


@router.post("/keys/{key_id}/revoke", response_model=StaffKeyRead)
def revoke_key(
    request: Request,
    key_id: Annotated[int, Path(ge=1, le=MAX_BIGINT)],
    session: SessionDep,
    admin: Admin,
) -> StaffKeyRead:
    revoked = service.revoke_key(session, key_id=key_id)
    # Named as the command line names it: a search by the key's name finds its end too.
    record_action(session, request, admin, action="revoke staff key", subject=revoked.name)
    return StaffKeyRead.model_validate(revoked)
