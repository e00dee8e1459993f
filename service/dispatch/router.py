"""/v1/alerts: what needs a human, and re-queueing it; /a/{reference}: an alert's details link;
/v1/webhooks/{notifier}/status: providers' delivery reports."""

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse

from service.advisories import deliveries as service
from service.advisories.service import get_advisory
from service.auth import Consul, SessionDep
from service.citizens.deps import RegistryDep
from service.db import MAX_BIGINT, utcnow
from service.dispatch import delivery
from service.dispatch.details import details_page
from service.dispatch.reference import Links
from service.dispatch.schemas import AlertPage, AlertRead, AlertStatus
from service.errors import NotFound

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
        status=status,
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
) -> AlertRead:
    alert = service.retry_alert(session, alert_id=alert_id, now=utcnow())
    _, items = service.list_alerts(session, registry=registry, alert_id=alert.id, limit=1, offset=0)
    return items[0]


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True))


@router.post("/v1/webhooks/{notifier}/status", status_code=204)
def delivery_report(
    request: Request,
    notifier: str,
    session: SessionDep,
    form: Annotated[dict[str, str], Depends(_form)],
) -> Response:
    """A provider's delivery report (Twilio's status callback is /v1/webhooks/twilio/status).
    The notifier of that name checks it is genuine (Twilio: X-Twilio-Signature over our public
    URL); anything else is refused with 403 before it touches the ledger."""
    url = request.app.state.settings.public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    delivery.receive_report(
        session,
        notifiers=request.app.state.dispatcher.notifiers,
        name=notifier,
        url=url,
        query=request.query_params,
        form=form,
        headers=request.headers,
        now=utcnow(),
    )
    return Response(status_code=204)


@router.get("/a/{reference}", response_class=HTMLResponse, include_in_schema=False)
def open_details(
    reference: str, session: SessionDep, registry: RegistryDep, request: Request
) -> HTMLResponse:
    """The link in every alert: records that the citizen opened it and shows the advisory."""
    links = Links(request.app.state.settings.public_base_url, registry.vault)
    alert_id = links.parse(reference)
    alert = delivery.record_opened(session, alert_id=alert_id, now=utcnow()) if alert_id else None
    if alert is None:
        raise NotFound("no such alert")
    return HTMLResponse(details_page(session, alert=alert, renderer=request.app.state.renderer))
