"""Staff API keys: created once, stored hashed, revocable, and good for a set number of days
(staff_key_life_days at most); an admin reissues a key with a new secret."""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit import actors
from service.citizens.contact import ContactError, normalise_email
from service.config import Settings
from service.db import utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.privacy import token_hash
from service.schema_rules import check_name
from service.staff.models import Role, StaffKey

KEY_PREFIX = "ajs_"
# What a caller that names no life gets (the API and the CLI pass the operator's setting).
DEFAULT_LIFE_DAYS: int = Settings.model_fields["staff_key_life_days"].default


@dataclass(frozen=True)
class IssuedKey:
    record: StaffKey
    key: str  # the only time the secret exists outside the caller's hands


def create_key(
    session: Session,
    *,
    name: str,
    role: str,
    email: str | None = None,
    most_days: int = DEFAULT_LIFE_DAYS,
    days: int | None = None,
    now: datetime | None = None,
    issued_by: str | None = None,
) -> IssuedKey:
    """Create a staff key good for `days` (at most and by default `most_days`), with the
    holder's e-mail (for decisions on what they propose); the returned secret is never stored,
    and `issued_by` (who is handed it) is."""
    name = name.strip()
    if email is not None:
        try:
            email = normalise_email(email)
        except ContactError as exc:
            raise InvalidInput("email", str(exc)) from exc
    if not name or len(name) > 100:
        raise InvalidInput("name", "must be 1 to 100 characters")
    try:
        check_name(name)  # the API's schema says so too; the command line comes here alone
    except ValueError as exc:
        raise InvalidInput("name", str(exc)) from exc
    if actors.is_reserved(name):
        reserved = ", ".join(f'"{prefix}"' for prefix in actors.RESERVED)
        raise InvalidInput("name", f"may not begin with {reserved}: the service names its own so")
    if role not in Role.__members__:
        raise InvalidInput("role", f"must be one of {', '.join(Role)}")
    now = now or utcnow()
    expires_at = _expiry(days, most_days, now)
    # Read as another key's name, it would pass for that person where they propose and
    # approve (a review made "bob" + ZERO WIDTH SPACE and "bоb", a Cyrillic o, beside "bob";
    # a probe "aIice" and "ɑlice" beside "alice").
    taken = next(
        (n for n in session.scalars(select(StaffKey.name)) if actors.reads_alike(n, name)), None
    )
    if taken is not None:
        raise Conflict(f"a staff key named {taken!r} already exists: {name!r} reads the same")
    key = _new_secret()
    record = StaffKey(
        name=name,
        role=role,
        key_hash=token_hash(key),
        key_prefix=key[:10],
        contact_email=email,
        issued_at=now,
        expires_at=expires_at,
        issued_by=issued_by,
    )
    session.add(record)
    session.flush()
    return IssuedKey(record=record, key=key)


def reissue_key(
    session: Session,
    *,
    replacing: str | None,
    most_days: int = DEFAULT_LIFE_DAYS,
    key_id: int | None = None,
    name: str | None = None,
    days: int | None = None,
    now: datetime | None = None,
    issued_by: str | None = None,
) -> IssuedKey:
    """A new secret for a key (same name, role and e-mail), good for `days` from now (by
    default the term it was last issued for, within `most_days`): the old secret admits nobody
    from this commit on. `replacing` is the key_prefix of the secret the caller means to
    replace (None: whichever it is, for the server's own shell): two admins (or a double
    click) reissuing at once would otherwise each hand out a secret, and all but the last
    would be dead on arrival. A revoked key stays revoked."""
    record = _find(session, key_id=key_id, name=name)
    if record.revoked_at is not None:
        raise Conflict(
            f"the staff key {record.name!r} is revoked; create a new key under another name"
        )
    if replacing is not None and record.key_prefix != replacing:
        raise Conflict(
            f"the staff key {record.name!r} was reissued since: its secret now starts "
            f"{record.key_prefix!r}, not {replacing!r}"
        )
    now = now or utcnow()
    expires_at = _expiry(min(record.term_days, most_days) if days is None else days, most_days, now)
    key = _new_secret()
    # Only if no other reissue (or revocation) committed since it was read; in PostgreSQL the
    # second of two at once waits for the first and then matches nothing.
    changed = session.execute(
        update(StaffKey)
        .where(
            StaffKey.id == record.id,
            StaffKey.key_hash == record.key_hash,
            StaffKey.revoked_at.is_(None),
        )
        .values(
            key_hash=token_hash(key),
            key_prefix=key[:10],
            issued_at=now,
            expires_at=expires_at,
            issued_by=issued_by,
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"the staff key {record.name!r} was reissued or revoked meanwhile")
    session.refresh(record)
    return IssuedKey(record=record, key=key)


def _new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _expiry(days: int | None, most_days: int, now: datetime) -> datetime:
    if days is None:
        days = most_days
    if not 1 <= days <= most_days:
        raise InvalidInput(
            "expires_in_days", f"must be 1 to {most_days} (the service's staff_key_life_days)"
        )
    return now + timedelta(days=days)


def _find(session: Session, *, key_id: int | None, name: str | None) -> StaffKey:
    query = select(StaffKey)
    query = (
        query.where(StaffKey.id == key_id)
        if key_id is not None
        else query.where(StaffKey.name == name)
    )
    record = session.scalar(query)
    if record is None:
        raise NotFound("no such staff key")
    return record


def list_keys(session: Session) -> list[StaffKey]:
    return list(session.scalars(select(StaffKey).order_by(StaffKey.id)))


def revoke_key(session: Session, *, key_id: int | None = None, name: str | None = None) -> StaffKey:
    """Revoke a key by id or name; revoking twice is harmless."""
    record = _find(session, key_id=key_id, name=name)
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return record


def look_up(session: Session, *, key: str) -> StaffKey | None:
    """The key a presented secret belongs to, live or not."""
    return session.scalar(select(StaffKey).where(StaffKey.key_hash == token_hash(key)))


def refusal(record: StaffKey | None, *, now: datetime) -> str | None:
    """Why a key admits nobody (for its 401), or None for a live one."""
    if record is None or record.revoked_at is not None:
        return "unknown or revoked staff key"
    if record.expires_at <= now:
        expired = f"{record.expires_at:%Y-%m-%d %H:%M} UTC"
        return f"this staff key expired on {expired}; an admin can reissue it"
    return None


def authenticate(session: Session, *, key: str, now: datetime | None = None) -> StaffKey | None:
    """The live key matching a presented secret, or None."""
    record = look_up(session, key=key)
    return record if refusal(record, now=now or utcnow()) is None else None
