"""Advisories: issue, revise, cancel, expire; and whom an advisory reaches."""

import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.advisories.drafts import AdvisoryDraft
from service.advisories.lifecycle import check_draft
from service.advisories.models import Advisory, AdvisoryRevision
from service.advisories.schemas import AdvisoryRead, AreaIn
from service.dispatch import notices
from service.errors import Conflict, NotFound
from service.geo import areas
from service.geomatch import service as geomatch


def area_from_request(area: AreaIn, *, max_vertices: int, field: str = "area") -> areas.Area:
    """Staff input to an Area, with errors naming the exact field."""
    circles = tuple(
        areas.check_circle(c.lat, c.lon, c.radius_km, field=f"{field}.circles[{i}]")
        for i, c in enumerate(area.circles)
    )
    geometry = (
        areas.check_geometry(area.geometry, field=f"{field}.geometry", max_vertices=max_vertices)
        if area.geometry is not None
        else None
    )
    return areas.Area(
        countries=areas.check_countries(area.countries, field=f"{field}.countries"),
        subdivisions=areas.check_subdivisions(area.subdivisions, field=f"{field}.subdivisions"),
        geometry=geometry,
        circles=circles,
    )


def create_advisory(
    session: Session, *, draft: AdvisoryDraft, issued_by: str, now: datetime, match: bool = True
) -> Advisory:
    """Validate and store a new advisory at revision 1, and enqueue whom it reaches (unless the
    caller matches a batch itself)."""
    check_draft(draft, now=now)
    advisory = Advisory(
        public_id=str(uuid.uuid4()),
        revision=1,
        status="active",
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
    if match:
        geomatch.match_advisories(session, advisories=[advisory], now=now)
    return advisory


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
    if advisory.status != "active":
        raise Conflict(f"the advisory is {advisory.status}; issue a new one instead")
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


def cancel_advisory(
    session: Session, *, advisory: Advisory, cancelled_by: str, now: datetime
) -> Advisory:
    """Cancel as a new revision (the cancellation notice is its own message); cancelling twice
    is harmless."""
    if advisory.status == "cancelled":
        return advisory
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
    advisory = session.scalar(select(Advisory).where(Advisory.public_id == public_id))
    if advisory is None:
        raise NotFound("no advisory with this id")
    return advisory


def list_advisories(
    session: Session, *, status: str | None, limit: int, offset: int
) -> tuple[int, list[Advisory]]:
    query = select(Advisory)
    if status:
        query = query.where(Advisory.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Advisory.id.desc()).limit(limit).offset(offset))
    return total, list(page)


def draft_of(advisory: Advisory) -> AdvisoryDraft:
    """The advisory's current content as a draft (the base a PATCH changes)."""
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
    )


def to_read(advisory: Advisory) -> AdvisoryRead:
    level = advisory.level if advisory.level == "special" else int(advisory.level)
    return AdvisoryRead(
        id=advisory.public_id,
        revision=advisory.revision,
        status=advisory.status,
        source=advisory.source,
        issued_by=advisory.issued_by,
        alerts_citizens=advisory.alerts_citizens,
        level=level,
        category=advisory.category,
        title=_texts(advisory.title_ko, advisory.title_en),
        message=_texts(advisory.message_ko, advisory.message_en),
        area=advisory.area,
        effective=advisory.effective,
        expires=advisory.expires,
        created_at=advisory.created_at,
        updated_at=advisory.updated_at,
        cancelled_at=advisory.cancelled_at,
    )


def _apply(advisory: Advisory, draft: AdvisoryDraft, *, now: datetime) -> None:
    advisory.level = draft.level
    advisory.category = draft.category
    advisory.title_ko, advisory.title_en = draft.title.get("ko"), draft.title.get("en")
    advisory.message_ko, advisory.message_en = draft.message.get("ko"), draft.message.get("en")
    advisory.area = draft.area.to_json()
    advisory.effective = draft.effective
    advisory.expires = draft.expires
    advisory.alerts_citizens = draft.alerts_citizens
    advisory.updated_at = now


def _texts(ko: str | None, en: str | None) -> dict[str, str]:
    return {lang: text for lang, text in (("ko", ko), ("en", en)) if text}
