"""Writing and reading the audit log."""

from datetime import datetime

from sqlalchemy import func, literal, or_, select
from sqlalchemy.orm import Session

from service.audit.models import AuditEntry
from service.schema_rules import REWRITES_DISPLAY


def record(
    session: Session,
    *,
    actor: str,
    role: str,
    client: str,
    action: str,
    subject: str | None = None,
    reason: str | None = None,
    status: int | None = None,
    now: datetime,
) -> AuditEntry:
    """Append one entry in the caller's transaction."""
    entry = AuditEntry(
        at=now,
        actor=actor,
        role=role,
        client=client[:64],
        action=action[:120],
        # A path id may carry a NUL, which PostgreSQL does not store: kept visible, escaped.
        subject=subject.replace("\x00", "\\x00")[:200] if subject else None,
        # What displays as something else is taken out, whoever wrote it (a request refuses it).
        reason=REWRITES_DISPLAY.sub("", reason.replace("\r\n", "\n")) if reason else reason,
        status=status,
    )
    session.add(entry)
    session.flush()
    return entry


# Requests that change nothing although they are POSTs: reach previews. The console previews
# every advisory in force on each view, and those buried what was done (a probe). A preview of
# an area a key drew (a new one, a draft's) is also written as "preview reach", which stays.
_READING_POSTS = ("POST /v1/advisories/preview", "POST /v1/advisories/{advisory_id}/preview")


def read(
    session: Session,
    *,
    actor: str | None,
    action: str | None,
    subject: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    reads: bool = True,
    up_to: int | None = None,
) -> tuple[int, list[AuditEntry]]:
    """A page of entries, newest first, and how many match in all; without `reads`, not the
    plain reads (GET and HEAD requests): an open console polls them every few seconds, and
    they buried an approval and a cancel within two minutes (an operator's review). `up_to`:
    entries up to this id, so that pages stay put while new ones are written (a review)."""
    where = []
    if up_to is not None:
        where.append(AuditEntry.id <= up_to)
    if not reads:
        where.append(~AuditEntry.action.startswith("GET ") & ~AuditEntry.action.startswith("HEAD "))
        where.append(AuditEntry.action.not_in(_READING_POSTS))
    if actor:
        where.append(AuditEntry.actor == actor)
    if action:
        where.append(AuditEntry.action.contains(action, autoescape=True))
    if subject:
        # A subject is one id, ids apart ("import advisories"), or a route's "name=value"
        # pairs ("advisory_id=…" for a cancel, a roll call): an id finds it in any of them (a
        # review looked an advisory up by its id and found its issue, not its cancel).
        padded = literal(" ") + AuditEntry.subject + literal(" ")
        where.append(
            or_(
                padded.contains(f" {subject} ", autoescape=True),
                padded.contains(f"={subject} ", autoescape=True),
            )
        )
    if since:
        where.append(AuditEntry.at >= since)
    if until:
        where.append(AuditEntry.at < until)
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    page = session.scalars(
        select(AuditEntry).where(*where).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    )
    return total, list(page)
