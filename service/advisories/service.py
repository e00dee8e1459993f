"""Advisories: issue, revise, cancel, expire; and whom an advisory reaches."""

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.advisories import reach
from service.advisories.drafts import AdvisoryDraft
from service.advisories.lifecycle import check_draft
from service.advisories.models import Advisory, AdvisoryProposal, AdvisoryRevision
from service.advisories.schemas import (
    AdvisoryCreate,
    AdvisoryRead,
    AdvisoryUpdate,
    AreaIn,
    ProposalRead,
    level_out,
)
from service.citizens.service import Registry
from service.db import utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.geo import areas
from service.geomatch import service as geomatch
from service.ledger import notices


def area_from_request(area: AreaIn, *, max_vertices: int, field: str = "area") -> areas.Area:
    """Staff input to an Area, with errors naming the exact field."""
    try:
        return _area_from_request(area, max_vertices=max_vertices, field=field)
    except areas.InvalidArea as exc:
        raise InvalidInput(exc.field, exc.message) from exc


def _area_from_request(area: AreaIn, *, max_vertices: int, field: str) -> areas.Area:
    circles = tuple(
        areas.check_circle(c.lat, c.lon, c.radius_km, field=f"{field}.circles[{i}]")
        for i, c in enumerate(area.circles)
    )
    geometry = (
        areas.check_geometry(area.geometry, field=f"{field}.geometry", max_vertices=max_vertices)
        if area.geometry is not None
        else None
    )
    name = area.name.as_dict() if area.name is not None else {}
    english = name.get("en") or name.get("ko") or ""
    return areas.Area(
        countries=areas.check_countries(area.countries, field=f"{field}.countries"),
        subdivisions=areas.check_subdivisions(area.subdivisions, field=f"{field}.subdivisions"),
        geometry=geometry,
        circles=circles,
        description=english,
        # The same words twice are one name: re-sending it in either form is no change.
        description_ko=name["ko"] if name.get("ko", english) != english else None,
    )


def draft_from_request(body: AdvisoryCreate, *, max_vertices: int, now: datetime) -> AdvisoryDraft:
    """Staff's new advisory as a draft; it takes effect now unless it says when."""
    return AdvisoryDraft(
        level=str(body.level),
        category=body.category,
        title=body.title.as_dict(),
        message=body.message.as_dict(),
        area=area_from_request(body.area, max_vertices=max_vertices),
        effective=body.effective or now,
        expires=body.expires,
        exercise=body.exercise,
    )


def create_advisory(
    session: Session,
    *,
    draft: AdvisoryDraft,
    issued_by: str,
    now: datetime,
    match: bool = True,
    status: str = "active",
) -> Advisory:
    """Validate and store a new advisory at revision 1, and (when active) enqueue whom it
    reaches (unless the caller matches a batch itself). A draft or one waiting for approval
    alerts nobody."""
    check_draft(draft, now=now)
    advisory = Advisory(
        public_id=str(uuid.uuid4()),
        revision=1,
        status=status,
        source=draft.source,
        issued_by=issued_by,
        created_at=now,
    )
    _apply(advisory, draft, now=now)
    advisory.revisions.append(
        AdvisoryRevision(revision=1, content=draft.content(), changed_by=issued_by, change="issued")
    )
    session.add(advisory)
    session.flush()
    if match and status == "active":
        geomatch.match_advisories(session, advisories=[advisory], now=now)
    return advisory


def rewrite_draft(
    session: Session, *, advisory: Advisory, draft: AdvisoryDraft, now: datetime
) -> Advisory:
    """A draft changes in place: it has only ever had one revision, and nobody was told."""
    _apply(advisory, draft, now=now)
    first = next(r for r in advisory.revisions if r.revision == advisory.revision)
    first.content = draft.content()
    session.flush()
    return advisory


def snapshot(draft: AdvisoryDraft) -> dict[str, Any]:
    """What a revision (or a proposal) stores of a draft."""
    return draft.content()


def revise_advisory(
    session: Session,
    *,
    advisory: Advisory,
    draft: AdvisoryDraft,
    changed_by: str,
    now: datetime,
    match: bool = True,
) -> Advisory:
    """A new revision (the previous one stays readable); everyone it reaches is told again."""
    check_revisable(advisory, now=now)
    check_draft(draft, now=now)
    advisory.revision += 1
    _apply(advisory, draft, now=now)
    advisory.revisions.append(
        AdvisoryRevision(
            revision=advisory.revision,
            content=draft.content(),
            changed_by=changed_by,
            change="revised",
        )
    )
    session.flush()
    if match:
        geomatch.match_advisories(session, advisories=[advisory], now=now)
    return advisory


def patched_draft(
    advisory: Advisory, *, changes: AdvisoryUpdate, now: datetime, max_vertices: int
) -> AdvisoryDraft | None:
    """Staff's PATCH as the advisory's new content (the fields it gives replace the current
    ones; expires: null removes the end); None when it changes nothing (no revision, nobody is
    told again). Only an active advisory or a draft is changed."""
    if advisory.status != "draft":
        check_revisable(advisory, now=now)
    current = draft_of(advisory)
    draft = draft_of(advisory)
    # The schema refuses null for every field but expires; None here means "not given".
    if changes.area is not None:
        draft.area = area_from_request(changes.area, max_vertices=max_vertices)
        if "name" not in changes.area.model_fields_set:
            # New shapes, same name: the name is left out, as every field a PATCH leaves out.
            # (The area read back carries no `name` to send again.) "name": null removes it.
            old = current.area
            draft.area = replace(
                draft.area, description=old.description, description_ko=old.description_ko
            )
    if changes.title is not None:
        draft.title = changes.title.as_dict()
    if changes.message is not None:
        draft.message = changes.message.as_dict()
    if changes.level is not None:
        draft.level = str(changes.level)
    if changes.category is not None:
        draft.category = changes.category
    if changes.effective is not None:
        draft.effective = changes.effective
    if "expires" in changes.model_fields_set:
        draft.expires = changes.expires
    if draft.comparable() == current.comparable():
        return None
    return draft


def lock_advisory(session: Session, advisory: Advisory) -> None:
    """Hold the advisory row until the transaction ends, read afresh: two decisions (approve
    and reject, a revision and a cancel) on one advisory happen one after the other, each
    seeing the other's outcome. (SQLite has one writer: nothing to do.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.refresh(advisory, with_for_update=True)
        session.expire(advisory, ["proposals"])


def cancel_advisory(
    session: Session, *, advisory: Advisory, cancelled_by: str, now: datetime
) -> Advisory:
    """Cancel as a new revision (the cancellation notice is its own message); cancelling twice
    is harmless. After whatever decision or revision is under way on it: a cancel that read the
    advisory before a revision committed took the same revision number (a review's reading)."""
    lock_advisory(session, advisory)
    if advisory.status == "cancelled":
        return advisory
    if advisory.ledger_kept is not None:
        # Whom it alerted went with its rows: an all-clear would reach nobody, unnoticed.
        raise Conflict(
            "the advisory ended long ago and its alerts were deleted under the retention rule: "
            "nobody is left to tell"
        )
    # Cancelling never waits for approval, and voids whatever did.
    session.execute(
        update(AdvisoryProposal)
        .where(AdvisoryProposal.advisory_id == advisory.id, AdvisoryProposal.status == "pending")
        .values(status="rejected", decided_by=cancelled_by, decided_at=now, reason="cancelled")
        .execution_options(synchronize_session=False)
    )
    session.expire(advisory, ["proposals"])
    advisory.revision += 1
    advisory.status = "cancelled"
    advisory.cancelled_at = advisory.updated_at = now
    advisory.revisions.append(
        AdvisoryRevision(
            revision=advisory.revision,
            content=draft_of(advisory).content(),
            changed_by=cancelled_by,
            change="cancelled",
        )
    )
    session.flush()
    notices.enqueue_cancellation(
        session, advisory_id=advisory.id, revision=advisory.revision, now=now
    )
    return advisory


def expire_due(session: Session, *, now: datetime) -> int:
    """Mark active advisories past their end as expired; returns how many."""
    result = session.execute(
        update(Advisory)
        .where(Advisory.status == "active", Advisory.expires <= now)
        .values(status="expired", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def get_advisory(session: Session, *, public_id: str) -> Advisory:
    # No id has a NUL, and PostgreSQL refuses one in a text parameter.
    query = select(Advisory).where(Advisory.public_id == public_id)
    advisory = None if "\x00" in public_id else session.scalar(query)
    if advisory is None:
        raise NotFound("no advisory with this id")
    return advisory


def status_at(advisory: Advisory, now: datetime) -> str:
    """The advisory's status at `now`: past its end it is expired, whether or not the minute
    job has written that down yet."""
    if advisory.status == "active" and advisory.expires is not None and advisory.expires <= now:
        return "expired"
    return advisory.status


def _status_is(status: str, now: datetime) -> ColumnElement[bool]:
    """status_at(advisory, now) == status, as SQL. `pending_approval` is the approver's queue:
    new advisories waiting, and active ones with a revision waiting."""
    if status == "pending_approval":
        waiting = (
            select(AdvisoryProposal.id)
            .where(
                AdvisoryProposal.advisory_id == Advisory.id,
                AdvisoryProposal.status == "pending",
            )
            .exists()
        )
        return or_(Advisory.status == "pending_approval", waiting)
    ended = and_(Advisory.expires.is_not(None), Advisory.expires <= now)
    if status == "active":
        return and_(
            Advisory.status == "active", or_(Advisory.expires.is_(None), Advisory.expires > now)
        )
    if status == "expired":
        return or_(Advisory.status == "expired", and_(Advisory.status == "active", ended))
    return Advisory.status == status


def list_advisories(
    session: Session,
    *,
    status: str | None,
    limit: int,
    offset: int,
    now: datetime,
    exercise: bool | None = None,
) -> tuple[int, list[Advisory]]:
    """A page of advisories, newest first; `status` as it is at `now`; drills or real ones
    only when `exercise` says."""
    query = select(Advisory)
    if status:
        query = query.where(_status_is(status, now))
    if exercise is not None:
        query = query.where(Advisory.exercise.is_(exercise))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Advisory.id.desc()).limit(limit).offset(offset))
    return total, list(page)


def matches(
    session: Session,
    *,
    advisory: Advisory,
    registry: Registry,
    limit: int,
    offset: int,
    now: datetime,
) -> tuple[int, list[reach.MatchedCitizen]]:
    """Whom the advisory reaches now (nobody once it has ended or was cancelled): the total and
    one page, contacts masked."""
    if status_at(advisory, now) != "active":
        return 0, []
    draft = draft_of(advisory)
    found = reach.reach_of_draft(session, draft, now=now)
    page = reach.matched_page(session, registry=registry, reach=found, limit=limit, offset=offset)
    return len(found.citizen_ids), page


def draft_of(advisory: Advisory) -> AdvisoryDraft:
    """The advisory's current content as a draft (the base a PATCH changes)."""
    # CAP's severity and urgency live only in the revision's content: kept, so that an
    # unchanged CAP Update is no change and a PATCH does not drop them.
    current = next((r.content for r in advisory.revisions if r.revision == advisory.revision), {})
    return AdvisoryDraft(
        level=advisory.level,
        category=advisory.category,
        title=_texts(advisory.title_ko, advisory.title_en),
        message=_texts(advisory.message_ko, advisory.message_en),
        area=areas.area_from_json(advisory.area),
        effective=advisory.effective,
        expires=advisory.expires,
        source=advisory.source,
        alerts_citizens=advisory.alerts_citizens,
        severity=current.get("severity") or "",
        urgency=current.get("urgency") or "",
        exercise=advisory.exercise,
    )


def to_read(advisory: Advisory, *, now: datetime | None = None) -> AdvisoryRead:
    """The advisory as the API shows it, its status as of `now` (default: this moment)."""
    return AdvisoryRead(
        id=advisory.public_id,
        revision=advisory.revision,
        status=status_at(advisory, now or utcnow()),
        source=advisory.source,
        issued_by=advisory.issued_by,
        alerts_citizens=advisory.alerts_citizens,
        exercise=advisory.exercise,
        level=level_out(advisory.level),
        category=advisory.category,
        title=_texts(advisory.title_ko, advisory.title_en),
        message=_texts(advisory.message_ko, advisory.message_en),
        area=advisory.area,
        effective=advisory.effective,
        expires=advisory.expires,
        created_at=advisory.created_at,
        updated_at=advisory.updated_at,
        cancelled_at=advisory.cancelled_at,
        pending=next(
            (
                ProposalRead.model_validate(p, from_attributes=True)
                for p in advisory.proposals
                if p.status == "pending"
            ),
            None,
        ),
        rejected_reason=next(
            (p.reason for p in reversed(advisory.proposals) if p.status == "rejected"), None
        )
        if advisory.status == "rejected"
        else None,
    )


def check_revisable(advisory: Advisory, *, now: datetime) -> None:
    """Only an active advisory gets a new revision."""
    status = status_at(advisory, now)
    if status != "active":
        raise Conflict(f"the advisory is {status}; issue a new one instead")


def _apply(advisory: Advisory, draft: AdvisoryDraft, *, now: datetime) -> None:
    advisory.level = draft.level
    advisory.category = draft.category
    advisory.title_ko, advisory.title_en = draft.title.get("ko"), draft.title.get("en")
    advisory.message_ko, advisory.message_en = draft.message.get("ko"), draft.message.get("en")
    advisory.area = draft.reach_area().to_json()
    advisory.effective = draft.effective
    advisory.expires = draft.expires
    advisory.alerts_citizens = draft.alerts_citizens
    advisory.exercise = draft.exercise
    advisory.updated_at = now


def _texts(ko: str | None, en: str | None) -> dict[str, str]:
    return {lang: text for lang, text in (("ko", ko), ("en", en)) if text}
