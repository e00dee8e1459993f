"""/v1/alerts: what needs a human, and re-queueing it; /a/{reference}: an alert's details link;
/v1/webhooks/{notifier}/status: providers' delivery reports."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from service.advisories import deliveries as service
from service.advisories.service import get_advisory
from service.auth import Consul, SessionDep, in_transaction
from service.citizens.deps import RegistryDep
from service.citizens.service import Registry
from service.db import MAX_BIGINT, utcnow
from service.dispatch import delivery
from service.dispatch.reference import Links
from service.dispatch.schemas import AlertPage, AlertRead, AlertStatus
from service.forms import PAGE_HEADERS, form_fields, signed_url

router = APIRouter(tags=["alerts"])
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_BIGINT)]


@router.get("/v1/alerts", response_model=AlertPage)
def list_alerts(
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    status: AlertStatus | None = None,
    advisory_id: str | None = None,
    channel: Annotated[str | None, Query(pattern="^(sms|email)$")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AlertPage:
    advisory = get_advisory(session, public_id=advisory_id) if advisory_id else None
    total, items = service.list_alerts(
        session,
        registry=registry,
        advisory_id=advisory.id if advisory else None,
        statuses=[status] if status else (),
        channel=channel,
        limit=limit,
        offset=offset,
    )
    return AlertPage(total=total, limit=limit, offset=offset, items=items)


@router.post("/v1/alerts/{alert_id}/retry", response_model=AlertRead)
def retry(
    alert_id: Annotated[int, Path(ge=1, le=MAX_BIGINT)],
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    request: Request,
) -> AlertRead:
    notifiers = request.app.state.dispatcher.notifiers
    settle_s = {channel: notifier.settle_s for channel, notifier in notifiers.items()}
    alert = service.retry_alert(session, alert_id=alert_id, now=utcnow(), settle_s=settle_s)
    _, items = service.list_alerts(session, registry=registry, alert_id=alert.id, limit=1, offset=0)
    return items[0]


@router.post("/v1/webhooks/{notifier}/status", status_code=204)
async def delivery_report(
    request: Request,
    notifier: str,
    form: Annotated[dict[str, str], Depends(form_fields)],
) -> Response:
    """A provider's delivery report (Twilio's status callback is /v1/webhooks/twilio/status).
    The notifier of that name checks it is genuine (Twilio: X-Twilio-Signature over our public
    URL); anything else is refused with 403 before it touches the ledger."""
    url = signed_url(request)

    def in_thread(session: Session) -> None:
        delivery.receive_report(
            session,
            notifiers=request.app.state.dispatcher.notifiers,
            name=notifier,
            url=url,
            query=request.query_params,
            form=form,
            headers=request.headers,
            now=utcnow(),
            hold_sender=request.app.state.dispatcher.hold_sender,
        )

    # A large send's reports arrive at its rate: one thread hand-off, not three.
    await in_transaction(request, in_thread)
    return Response(status_code=204)


@router.get("/a/{reference}", response_class=HTMLResponse, include_in_schema=False)
def open_details(
    reference: str, session: SessionDep, registry: RegistryDep, request: Request
) -> HTMLResponse:
    """The link in every alert: shows the advisory. It records nothing: link scanners and
    message previews fetch it too; the citizen's own "I have read this" (POST) does."""
    return _details(request, session, registry, reference, seen=False)


@router.post("/a/{reference}", response_class=HTMLResponse, include_in_schema=False)
def confirm_read(
    reference: str, session: SessionDep, registry: RegistryDep, request: Request
) -> HTMLResponse:
    """The citizen pressed "I have read this": the alert is marked opened."""
    return _details(request, session, registry, reference, seen=True)


def _details(
    request: Request, session: Session, registry: Registry, reference: str, *, seen: bool
) -> HTMLResponse:
    page = delivery.details_for(
        session,
        links=Links(request.app.state.settings.public_base_url, registry.vault),
        reference=reference,
        renderer=request.app.state.renderer,
        now=utcnow(),
        seen=seen,
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)
