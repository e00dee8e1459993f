from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.advisories import approval, decisions, formats, ingest, service
from service.advisories import deliveries as alert_views
from service.advisories.drafts import AdvisoryDraft
from service.advisories.schemas import (
    AdvisoryCreate,
    AdvisoryRead,
    AdvisoryUpdate,
    Approval,
    ImportResult,
    MatchRead,
    Page,
    Rejection,
    RevisionRead,
)
from service.auth import Consul, SessionDep, Viewer, client_of, record_action
from service.citizens.deps import RegistryDep
from service.db import MAX_BIGINT, utcnow
from service.dispatch.schemas import AlertsRead, AlertStatus
from service.errors import FieldError, InvalidInput
from service.ledger import states

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
    """A new advisory: active at once (matching and sending start), or `pending_approval` when
    it is level 3, 4 or special or reaches more than ANJEON_APPROVAL_MIN_REACH citizens (a
    second consul or admin approves it), or a `draft` ("draft": true) that never sends."""
    advisory = approval.issue(
        session,
        draft=_draft(request, body),
        issued_by=staff.name,
        policy=request.app.state.settings.approval_policy(),
        min_reach=request.app.state.settings.approval_min_reach,
        now=utcnow(),
        as_draft=body.draft,
    )
    record_action(
        session,
        request,
        staff,
        action="issue advisory",
        subject=advisory.public_id,
        reason=f"level {advisory.level}, {advisory.status}",
    )
    return service.to_read(advisory)


@router.post("/import", response_model=ImportResult, status_code=201)
async def import_document(
    request: Request,
    session: SessionDep,
    staff: Consul,
    format: Literal["cap", "geojson", "rss", "mofa"] | None = None,
    feed: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    """A feed document posted by staff: 201 when it created an advisory, 200 when everything in
    it was known already (nothing is sent again), 422 when nothing in it could be used. With
    `feed`, the document is that configured feed's (imported while it is down): the feed, back,
    takes over what this creates; no other feed ever acts on it."""
    if feed is not None and feed not in {f.name for f in request.app.state.feeds}:
        raise InvalidInput("feed", f"no feed named {feed!r} in the feeds file")
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
        policy=settings.approval_policy(),
        min_reach=settings.approval_min_reach,
        for_feed=feed,
    )
    if not (summary.created or summary.updated or summary.unchanged) and summary.rejected:
        raise InvalidInput.of([FieldError(label, why) for label, why in summary.rejected])
    changed = [a.public_id for a in [*summary.created, *summary.updated]]
    if changed:
        await run_in_threadpool(
            record_action,
            session,
            request,
            staff,
            action="import advisories",
            subject=" ".join(changed),
            reason=f"created {len(summary.created)}, updated {len(summary.updated)}",
        )
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
    status: Literal["draft", "pending_approval", "rejected", "active", "expired", "cancelled"]
    | None = None,
    exercise: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AdvisoryRead]:
    """Newest first; `status` as it is now (`pending_approval` is the approver's queue),
    `exercise` true for drills only, false for real advisories only."""
    now = utcnow()
    total, items = service.list_advisories(
        session, status=status, exercise=exercise, limit=limit, offset=offset, now=now
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
    """Change the fields given; 200 with the advisory as it stands. A PATCH that changes
    nothing makes no revision and alerts nobody; a draft changes in place; a revision that
    needs approval waits (`pending`), and the revision in force stays until it is approved."""
    settings = request.app.state.settings
    advisory = service.get_advisory(session, public_id=advisory_id)
    now = utcnow()
    draft = service.patched_draft(
        advisory, changes=body, now=now, max_vertices=settings.max_area_vertices
    )
    if draft is not None:
        approval.revise(
            session,
            advisory=advisory,
            draft=draft,
            changed_by=staff.name,
            policy=settings.approval_policy(),
            min_reach=settings.approval_min_reach,
            now=now,
        )
        waits = any(p.status == "pending" for p in advisory.proposals)
        record_action(
            session,
            request,
            staff,
            action="revise advisory",
            subject=advisory.public_id,
            reason="waits for approval" if waits else f"revision {advisory.revision}",
        )
    return service.to_read(advisory)


@router.post("/{advisory_id}/submit", response_model=AdvisoryRead)
def submit(request: Request, advisory_id: str, session: SessionDep, staff: Consul) -> AdvisoryRead:
    """A draft moves on: to approval, or active (and sent) at once."""
    advisory = approval.submit(
        session,
        advisory=service.get_advisory(session, public_id=advisory_id),
        by=staff.name,
        min_reach=request.app.state.settings.approval_min_reach,
        now=utcnow(),
        policy=request.app.state.settings.approval_policy(),  # type: ignore[arg-type]
    )
    return service.to_read(advisory)


@router.post("/{advisory_id}/approve", response_model=AdvisoryRead)
def approve(
    request: Request,
    advisory_id: str,
    session: SessionDep,
    staff: Consul,
    tasks: BackgroundTasks,
    body: Approval,
) -> AdvisoryRead:
    """A second consul or admin approves what waits (403 for the key that proposed it), named
    by the `pending.id` you read: if what waits was replaced since, the answer is 409."""
    advisory = service.get_advisory(session, public_id=advisory_id)
    decided = approval.approve(
        session,
        advisory=advisory,
        by=staff.name,
        now=utcnow(),
        proposal_id=body.proposal_id,
    )
    record_action(session, request, staff, action="approve advisory", subject=advisory.public_id)
    _tell_proposer(request, tasks, decided)
    return service.to_read(advisory)


@router.post("/{advisory_id}/reject", response_model=AdvisoryRead)
def reject(
    request: Request,
    advisory_id: str,
    body: Rejection,
    session: SessionDep,
    staff: Consul,
    tasks: BackgroundTasks,
) -> AdvisoryRead:
    """A second consul or admin turns down what waits, saying why."""
    advisory = service.get_advisory(session, public_id=advisory_id)
    decided = approval.reject(
        session,
        advisory=advisory,
        by=staff.name,
        role=staff.role,
        client=client_of(request),
        reason=body.reason,
        now=utcnow(),
    )
    _tell_proposer(request, tasks, decided)
    return service.to_read(advisory)


def _tell_proposer(request: Request, tasks: BackgroundTasks, decided: approval.Decided) -> None:
    """After the commit, the proposer hears the decision (their key's e-mail, else the staff
    webhook)."""
    state = request.app.state
    tasks.add_task(
        decisions.tell_proposer,
        state.session_factory,
        decided=decided,
        notifiers=state.dispatcher.notifiers,
        settings=state.settings,
    )


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
    status: Annotated[list[AlertStatus] | None, Query(max_length=len(states.ALL))] = None,
) -> AlertsRead:
    """The advisory's delivery counts by status and channel, and a page of its alerts, newest
    first: of those in any `status` given (repeat it: the console asks for failed, undelivered
    and expired, whatever their age)."""
    advisory = service.get_advisory(session, public_id=advisory_id)
    total, items = alert_views.list_alerts(
        session,
        registry=registry,
        advisory_id=advisory.id,
        statuses=status or (),
        limit=limit,
        offset=offset,
    )
    counts, by_revision = alert_views.counts_for(session, advisory=advisory)
    return AlertsRead(
        exercise=advisory.exercise,
        rows_forgotten_at=advisory.rows_forgotten_at,
        counts=counts,
        by_revision=by_revision,
        total=total,
        limit=limit,
        offset=offset,
        items=items,
    )
