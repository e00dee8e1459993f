"""Staff API keys: created once, stored hashed, revocable."""

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.citizens.contact import ContactError, normalise_email
from service.db import utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.privacy import token_hash
from service.staff.models import Role, StaffKey

KEY_PREFIX = "ajs_"


@dataclass(frozen=True)
class IssuedKey:
    record: StaffKey
    key: str  # the only time the secret exists outside the caller's hands


def create_key(session: Session, *, name: str, role: str, email: str | None = None) -> IssuedKey:
    """Create a staff key (with the holder's e-mail, for decisions on what they propose); the
    returned secret is never stored."""
    name = name.strip()
    if email is not None:
        try:
            email = normalise_email(email)
        except ContactError as exc:
            raise InvalidInput("email", str(exc)) from exc
    if not name or len(name) > 100:
        raise InvalidInput("name", "must be 1 to 100 characters")
    if role not in Role.__members__:
        raise InvalidInput("role", f"must be one of {', '.join(Role)}")
    if session.scalar(select(StaffKey.id).where(StaffKey.name == name)) is not None:
        raise Conflict(f"a staff key named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = StaffKey(
        name=name, role=role, key_hash=token_hash(key), key_prefix=key[:10], contact_email=email
    )
    session.add(record)
    session.flush()
    return IssuedKey(record=record, key=key)


def list_keys(session: Session) -> list[StaffKey]:
    return list(session.scalars(select(StaffKey).order_by(StaffKey.id)))


def revoke_key(session: Session, *, key_id: int | None = None, name: str | None = None) -> StaffKey:
    """Revoke a key by id or name; revoking twice is harmless."""
    query = select(StaffKey)
    query = (
        query.where(StaffKey.id == key_id)
        if key_id is not None
        else query.where(StaffKey.name == name)
    )
    record = session.scalar(query)
    if record is None:
        raise NotFound("no such staff key")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return record


def authenticate(session: Session, *, key: str) -> StaffKey | None:
    """The live key matching a presented secret, or None."""
    record = session.scalar(select(StaffKey).where(StaffKey.key_hash == token_hash(key)))
    if record is None or record.revoked_at is not None:
        return None
    return record
