from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.advisories import deliveries as alert_views
from service.advisories import formats, ingest, service
from service.advisories.drafts import AdvisoryDraft
from service.advisories.schemas import (
    AdvisoryCreate,
    AdvisoryRead,
    AdvisoryUpdate,
    ImportResult,
    MatchRead,
    Page,
    RevisionRead,
)
from service.auth import Consul, SessionDep, Viewer
from service.citizens.deps import RegistryDep
from service.db import MAX_BIGINT, utcnow
from service.dispatch.schemas import AlertsRead
from service.errors import FieldError, InvalidInput

router = APIRouter(prefix="/v1/advisories", tags=["advisories"])
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_BIGINT)]


def _draft(request: Request, body: AdvisoryCreate) -> AdvisoryDraft:
    max_vertices = request.app.state.settings.max_area_vertices
    return service.draft_from_request(body, max_vertices=max_vertices, now=utcnow())


@router.post("", status_code=201, response_model=AdvisoryRead)
def issue(
    request: Request, body: AdvisoryCreate, session: SessionDep, staff: Consul
) -> AdvisoryRead:
    draft = _draft(request, body)
    advisory = service.create_advisory(session, draft=draft, issued_by=staff.name, now=utcnow())
    return service.to_read(advisory)


@router.post("/import", response_model=ImportResult, status_code=201)
async def import_document(
    request: Request,
    session: SessionDep,
    staff: Consul,
    format: Literal["cap", "geojson", "rss", "mofa"] | None = None,
) -> JSONResponse:
    """A feed document posted by staff: 201 when it created an advisory, 200 when everything in
    it was known already (nothing is sent again), 422 when nothing in it could be used."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    format_name = format or formats.CONTENT_TYPES.get(content_type)
    if format_name is None and content_type not in formats.SNIFFED_CONTENT_TYPES:
        generic = ", ".join(sorted(t for t in formats.SNIFFED_CONTENT_TYPES if t))
        raise InvalidInput(
            "content-type",
            f"use one of {', '.join(formats.CONTENT_TYPES)}, a generic type ({generic}: the "
            "format is told from the content), or ?format=cap|geojson|rss|mofa",
        )
    data = await request.body()
    settings = request.app.state.settings
    summary = await run_in_threadpool(
        ingest.import_document,
        session,
        format_name=format_name,
        data=data,
        issued_by=staff.name,
        now=utcnow(),
        max_vertices=settings.max_area_vertices,
    )
    if not (summary.created or summary.updated or summary.unchanged) and summary.rejected:
        raise InvalidInput.of([FieldError(label, why) for label, why in summary.rejected])
    result = ImportResult(
        created=[a.public_id for a in summary.created],
        updated=[a.public_id for a in summary.updated],
        skipped=[{"item": label, "reason": why} for label, why in summary.skipped],
        rejected=[{"item": label, "reason": why} for label, why in summary.rejected],
        advisories=[
            service.to_read(a)
            for a in dict.fromkeys([*summary.created, *summary.updated, *summary.unchanged])
        ],
    )
    return JSONResponse(result.model_dump(mode="json"), status_code=201 if summary.created else 200)


@router.get("", response_model=Page[AdvisoryRead])
def list_advisories(
    session: SessionDep,
    _staff: Viewer,
    status: Literal["active", "expired", "cancelled"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AdvisoryRead]:
    now = utcnow()
    total, items = service.list_advisories(
        session, status=status, limit=limit, offset=offset, now=now
    )
    items_read = [service.to_read(a, now=now) for a in items]
    return Page(total=total, limit=limit, offset=offset, items=items_read)


@router.get("/{advisory_id}", response_model=AdvisoryRead)
def read(advisory_id: str, session: SessionDep, _staff: Viewer) -> AdvisoryRead:
    return service.to_read(service.get_advisory(session, public_id=advisory_id))


@router.get("/{advisory_id}/revisions", response_model=list[RevisionRead])
def revisions(advisory_id: str, session: SessionDep, _staff: Viewer) -> list[RevisionRead]:
    advisory = service.get_advisory(session, public_id=advisory_id)
    return [RevisionRead.model_validate(r, from_attributes=True) for r in advisory.revisions]


@router.patch("/{advisory_id}", response_model=AdvisoryRead)
def revise(
    request: Request, advisory_id: str, body: AdvisoryUpdate, session: SessionDep, staff: Consul
) -> AdvisoryRead:
    """Change the fields given; 200 with the advisory as it stands, revised or not (a PATCH
    that changes nothing makes no revision and alerts nobody)."""
    advisory = service.revise_from_patch(
        session,
        advisory=service.get_advisory(session, public_id=advisory_id),
        changes=body,
        changed_by=staff.name,
        now=utcnow(),
        max_vertices=request.app.state.settings.max_area_vertices,
    )
    return service.to_read(advisory)


@router.post("/{advisory_id}/cancel", response_model=AdvisoryRead)
def cancel(advisory_id: str, session: SessionDep, staff: Consul) -> AdvisoryRead:
    advisory = service.get_advisory(session, public_id=advisory_id)
    service.cancel_advisory(session, advisory=advisory, cancelled_by=staff.name, now=utcnow())
    return service.to_read(advisory)


@router.get("/{advisory_id}/matches", response_model=Page[MatchRead])
def matches(
    advisory_id: str,
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[MatchRead]:
    total, page = service.matches(
        session,
        advisory=service.get_advisory(session, public_id=advisory_id),
        registry=registry,
        limit=limit,
        offset=offset,
        now=utcnow(),
    )
    items = [MatchRead.model_validate(m, from_attributes=True) for m in page]
    return Page(total=total, limit=limit, offset=offset, items=items)


@router.get("/{advisory_id}/alerts", response_model=AlertsRead)
def alerts(
    advisory_id: str,
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AlertsRead:
    advisory = service.get_advisory(session, public_id=advisory_id)
    total, items = alert_views.list_alerts(
        session, registry=registry, advisory_id=advisory.id, limit=limit, offset=offset
    )
    return AlertsRead(
        counts=alert_views.counts_for(session, advisory_id=advisory.id),
        total=total,
        limit=limit,
        offset=offset,
        items=items,
    )
