"""Before a send: the preview that helps staff decide, and a test send to their own phone or
e-mail."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.advisories import preview as previews
from service.advisories import service
from service.advisories import test_send as tests
from service.advisories.schemas import AdvisoryCreate, Preview, TestSendRead, TestSendRequest
from service.auth import Consul, SessionDep, record_action, require_role_without_session
from service.db import utcnow
from service.rate_limits import RateLimits, Rule
from service.staff.models import Role, StaffKey

router = APIRouter(prefix="/v1/advisories", tags=["advisories"])

# The test send talks to Twilio or SMTP: it takes no request session (whose transaction the
# staff check's audit entry opens) and reads in a short one of its own.
ConsulWithoutSession = Annotated[
    StaffKey, Depends(require_role_without_session(Role.consul), scope="function")
]


async def _limits(request: Request) -> RateLimits:
    # async: a sync dependency would take a thread of anyio\'s pool to read one attribute
    return request.app.state.rate_limits


LimitsDep = Annotated[RateLimits, Depends(_limits)]


@router.post("/preview", response_model=Preview)
def preview(request: Request, body: AdvisoryCreate, session: SessionDep, staff: Consul) -> Preview:
    """Whom a new advisory would reach (by channel, language and country of the matched place)
    and how many SMS it would cost; nothing is stored but the audit entry, which names the
    area and the count (shrinking areas one count at a time locate a person)."""
    settings = request.app.state.settings
    now = utcnow()
    draft = service.draft_from_request(body, max_vertices=settings.max_area_vertices, now=now)
    with request.app.state.reach_counts.turn(staff.name):
        # Within the turn: the console asks again after a busy refusal, which spends nothing.
        request.app.state.rate_limits.take_here_when_away(Rule.PREVIEW, staff.name)
        found = previews.preview(
            session,
            draft=draft,
            renderer=request.app.state.renderer,
            base_url=settings.public_base_url,
            now=now,
        )
    record_action(
        session,
        request,
        staff,
        action="preview reach",
        subject=None,
        reason=f"{previews.area_summary(draft.area)}; reached {found.citizens}",
    )
    return found


@router.post("/{advisory_id}/preview", response_model=Preview)
def preview_stored(
    request: Request, advisory_id: str, session: SessionDep, staff: Consul
) -> Preview:
    """The same preview of a stored advisory, whatever its status (a draft, one pending
    approval, one in force), from its current content; a draft's, and one not yet in effect,
    are counted and audited as the other preview is (edited and previewed again, the same
    hunt)."""
    advisory = service.get_advisory(session, public_id=advisory_id)
    now = utcnow()
    # Only an area that alerts nobody changes at will: a draft's, or one of an advisory not yet
    # in effect, which a PATCH moves unseen (a review found that way round the limit). Those
    # previews are the hunt a probe found: counted and audited as the other preview is. The
    # console previews every advisory in force on each view, which would bury the log.
    hunt = advisory.status == "draft" or (advisory.status == "active" and advisory.effective > now)
    with request.app.state.reach_counts.turn(staff.name):
        if hunt:
            request.app.state.rate_limits.take_here_when_away(Rule.PREVIEW, staff.name)
        found = previews.preview_advisory(
            session,
            advisory=advisory,
            renderer=request.app.state.renderer,
            base_url=request.app.state.settings.public_base_url,
            now=now,
        )
    if hunt:
        # Its own content is what was previewed: nothing of it is under review.
        area = service.draft_of(advisory).area
        record_action(
            session,
            request,
            staff,
            action="preview reach",
            subject=advisory.public_id,
            reason=f"{previews.area_summary(area)}; reached {found.citizens}",
        )
    return found


@router.post("/{advisory_id}/test-send", status_code=202, response_model=TestSendRead)
def test_send(
    request: Request,
    advisory_id: str,
    body: TestSendRequest,
    staff: ConsulWithoutSession,
    limits: LimitsDep,
) -> TestSendRead:
    """Send the advisory as a citizen of `language` would get it, marked [TEST], to one staff
    phone or e-mail. No alert is recorded and no citizen is told; a few an hour per staff key."""
    settings = request.app.state.settings
    with request.app.state.session_factory() as session:
        prepared = tests.prepare_test_send(
            session,
            advisory_id=advisory_id,
            phone=body.phone,
            email=body.email,
            language=body.language,
            renderer=request.app.state.renderer,
            base_url=settings.public_base_url,
            default_region=settings.phone_default_region,
            vault=request.app.state.registry.vault,
            now=utcnow(),
        )
    message = prepared.message
    limits.take_test_send(staff.name, "sms" if message.channel == "sms" else "email", message.to)
    # Where it goes and what it says, kept before it leaves: one consul's words, approved by
    # nobody, under the ministry's sender (a review's lure left only "POST …/test-send"
    # behind, its draft then edited in place and cancelled).
    with request.app.state.session_factory.begin() as session:
        subject = f"{message.subject} | " if message.subject else ""
        record_action(
            session,
            request,
            staff,
            action="test send",
            subject=advisory_id,
            reason=f"{message.channel} to {prepared.to}: {subject}{message.text}",
        )
    outcome = tests.send_test(request.app.state.dispatcher.notifiers, prepared)
    if outcome.opted_out:
        with request.app.state.session_factory.begin() as session:
            tests.keep_refused_stop(
                session, vault=request.app.state.registry.vault, test=prepared, now=utcnow()
            )
    return TestSendRead(
        channel="sms" if message.channel == "sms" else "email",
        to=prepared.to,
        language=prepared.language,
        subject=message.subject or None,
        text=message.text,
        segments=message.segments,
        outcome=outcome.said,
    )
