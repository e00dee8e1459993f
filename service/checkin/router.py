"""Safety check-in: SMS replies (Twilio's inbound webhook), the check-in link's page, and the
roll call staff read and start."""

from datetime import datetime
from typing import Annotated, Literal
from xml.sax.saxutils import escape

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from service.advisories.service import get_advisory
from service.auth import Consul, SessionDep, in_transaction
from service.checkin import answers, duty, help_messages, rollcall
from service.checkin.page import checkin_page
from service.checkin.replies import answer_text, unmatched_text
from service.citizens.deps import RegistryDep
from service.db import MAX_BIGINT, utcnow
from service.dispatch.notifiers.base import ReportRejected
from service.dispatch.reference import Links
from service.errors import Forbidden, InvalidInput
from service.forms import PAGE_HEADERS, form_fields, signed_url
from service.schema_rules import StrictModel, UtcTime

router = APIRouter(tags=["check-in"])


def _tell_duty(
    request: Request,
    tasks: BackgroundTasks,
    recorded: tuple[answers.Recorded, ...],
    help_message_id: int | None = None,
) -> None:
    """A new "need help": the duty staff are told after the commit, outside any transaction
    (the minute job sends it if this does not)."""
    checkin_ids = [each.checkin_id for each in recorded if each.tell_duty]
    if not checkin_ids and help_message_id is None:
        return
    state = request.app.state
    tasks.add_task(
        duty.tell_duty,
        state.session_factory,
        vault=state.registry.vault,
        notifiers=state.dispatcher.notifiers,
        settings=state.settings,
        checkin_ids=checkin_ids,
        help_message_ids=[help_message_id] if help_message_id is not None else [],
        now=utcnow(),
        limits=state.rate_limits,
    )


def _twiml(text: str | None) -> Response:
    body = f"<Message>{escape(text)}</Message>" if text else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        media_type="application/xml",
    )


@router.post("/v1/webhooks/twilio/inbound", response_class=Response)
async def inbound_sms(
    request: Request,
    registry: RegistryDep,
    tasks: BackgroundTasks,
    form: Annotated[dict[str, str], Depends(form_fields)],
) -> Response:
    """A citizen's SMS reply, as Twilio forwards it (signed with X-Twilio-Signature over our
    public URL; anything else is a 403 and touches nothing). Answered in TwiML."""

    def in_thread(session: Session) -> Response:
        notifier = request.app.state.dispatcher.notifiers.get("sms")
        if notifier is None or notifier.name != "twilio":
            raise Forbidden("SMS replies are taken only when the SMS notifier is twilio")
        try:
            message = notifier.read_inbound(
                url=signed_url(request), form=form, headers=request.headers
            )
        except ReportRejected as exc:
            raise Forbidden(str(exc)) from exc
        heard = answers.hear_sms(
            session,
            vault=registry.vault,
            sender=message.sender,
            body=message.body,
            provider_ref=message.provider_ref,
            now=utcnow(),
        )
        _tell_duty(request, tasks, heard.recorded, heard.help_message_id)
        # A cry for help from a citizen's number is acknowledged; nothing else goes to a number
        # that said STOP (a probe's unregistered one got the "reply to a check-in" text).
        unwanted = heard.stopped and (heard.kind != "help" or heard.language is None)
        if heard.duplicate or heard.kind in ("stop", "start") or unwanted:
            # A retried webhook was answered the first time. The provider confirms opt-out and
            # opt-in itself, and a text of ours after STOP is refused (US, Canada) or unwanted:
            # the answer is recorded, and not answered; but a cry for help is acknowledged.
            return _twiml(None)
        if not request.app.state.rate_limits.take_reply(message.sender, known=heard.registered):
            # Each answer is an SMS we pay for: a number that keeps texting gets silence.
            return _twiml(None)
        if heard.language is None:  # nobody holds the number, or nothing asked them
            return _twiml(unmatched_text())
        language = "ko" if heard.language == "ko" else "en"
        paged = request.app.state.settings.pages_duty_staff
        return _twiml(answer_text(heard.kind, language, unasked=heard.unasked, duty_paged=paged))

    # A crisis's replies come in bursts: one thread hand-off, not three (in_transaction).
    return await in_transaction(request, in_thread)


@router.get("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
def open_checkin(
    token: str, session: SessionDep, registry: RegistryDep, request: Request
) -> HTMLResponse:
    """The check-in link: the advisory and two buttons. Records nothing."""
    page = checkin_page(
        session,
        links=Links(request.app.state.settings.public_base_url, registry.vault),
        renderer=request.app.state.renderer,
        token=token,
        now=utcnow(),
    )
    return HTMLResponse(page.html, headers=PAGE_HEADERS)


@router.post("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
async def answer_checkin(
    token: str,
    registry: RegistryDep,
    request: Request,
    tasks: BackgroundTasks,
    form: Annotated[dict[str, str], Depends(form_fields)],
) -> HTMLResponse:
    """The citizen pressed "I am safe" or "I need help" (form `answer=safe|help`, optional
    `note`)."""
    answer = form.get("answer")
    if answer is None:
        raise InvalidInput("answer", "missing: safe or help")

    def in_thread(session: Session) -> HTMLResponse:
        page = checkin_page(
            session,
            links=Links(request.app.state.settings.public_base_url, registry.vault),
            renderer=request.app.state.renderer,
            token=token,
            now=utcnow(),
            answer=answer,
            note=form.get("note"),
            duty_paged=request.app.state.settings.pages_duty_staff,
        )
        _tell_duty(request, tasks, page.recorded)
        return HTMLResponse(page.html, headers=PAGE_HEADERS)

    return await in_transaction(request, in_thread)  # one thread hand-off, not three


Standing = Literal["safe", "help", "no_answer", "unreachable"]


class RollCallItem(BaseModel):
    citizen_id: str
    contact: str | None = Field(description="Masked phone, else masked e-mail.")
    answer: Standing
    channel: str | None = Field(
        description="How the answer in force came: sms, web (the check-in page) or staff (a "
        "consul who reached them confirmed them safe)."
    )
    answered_at: datetime | None
    country: str | None = Field(description="The country of the place that matched.")
    sms_opted_out: bool = Field(
        description="Their number sent STOP: the provider refuses our SMS to it, so only "
        "e-mail (or a call) reaches them."
    )
    taken_by: str | None = Field(
        description="The consul (staff key name) handling this citizen who needs help."
    )
    taken_at: datetime | None
    erased: bool = Field(
        description="They erased their record since answering: their answer still counts, "
        "and nothing is left to call, reveal or take (whoever took them can give them back)."
    )
    safe_said_at: datetime | None = Field(
        description="A safe pressed on their check-in page while their help is in force: the "
        "help stays (a link can be forwarded or leaked) until their own phone says safe or a "
        "consul who reached them confirms it."
    )
    confirmed_by: str | None = Field(
        description="Channel staff: the consul who reached them and confirmed them safe."
    )
    latest_help_at: datetime | None = Field(
        description="Their newest help answer in force under any advisory (drills apart): a "
        "help pressed under another advisory's page shows only here. Closing the case names it."
    )
    latest_help_advisory: str | None = Field(
        description="The advisory that newest help answers: where to read it."
    )
    established: bool = Field(
        description="The record has a verified phone, or has had a verified contact for a "
        "day. false: a new record with no verified phone, which anyone can make (an e-mail "
        "inbox is enough); its help still counts, and the duty staff are told of it one by one "
        "only within a part of the hour's notices (ANJEON_RATE_LIMIT_DUTY_PAGE_NEW), past it in "
        "a summary."
    )


class RollCallRead(BaseModel):
    exercise: bool = Field(description="true: the roll call of a drill, not of a real advisory.")
    counts: dict[Standing, int]
    by_country: dict[str, dict[Standing, int]]
    total: int = Field(description="Rows matching the filters.")
    limit: int
    offset: int
    items: list[RollCallItem]
    rows_forgotten_at: datetime | None = Field(
        None,
        description="When the advisory's alerts and answers began to be deleted, "
        "ledger_retention_days after it ended: the counts are those kept then, and no rows "
        "are listed. null: every row is here.",
    )


class RoundStarted(BaseModel):
    round: int
    asked: int = Field(description="Citizens asked.")
    queued: int = Field(description="Messages queued.")


@router.get("/v1/advisories/{advisory_id}/rollcall", response_model=RollCallRead)
def read_roll_call(
    advisory_id: str,
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    answer: Standing | None = None,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
    taken: Annotated[
        bool | None, Query(description="true: taken by a consul; false: nobody has them yet.")
    ] = None,
) -> RollCallRead:
    """Who was asked "are you safe?" about this advisory and where each stands: counts by
    answer and by country of the matched place; rows (contacts masked) filtered and paged."""
    found = rollcall.roll_call(
        session,
        advisory=get_advisory(session, public_id=advisory_id),
        registry=registry,
        answer=answer,
        country=country,
        limit=limit,
        offset=offset,
        taken=taken,
        now=utcnow(),
    )
    return RollCallRead(
        exercise=found.exercise,
        counts=found.counts,  # type: ignore[arg-type]
        by_country=found.by_country,  # type: ignore[arg-type]
        total=found.total,
        limit=limit,
        offset=offset,
        items=[RollCallItem.model_validate(i, from_attributes=True) for i in found.items],
        rows_forgotten_at=found.rows_forgotten_at,
    )


@router.post("/v1/advisories/{advisory_id}/rollcall", status_code=202, response_model=RoundStarted)
def start_roll_call(advisory_id: str, session: SessionDep, _staff: Consul) -> RoundStarted:
    """Ask "are you safe?" of everyone the advisory alerted, whatever its level."""
    started = rollcall.start_round(
        session, advisory=get_advisory(session, public_id=advisory_id), now=utcnow()
    )
    return RoundStarted(round=started.round, asked=started.asked, queued=started.queued)


class TakenRead(BaseModel):
    citizen_id: str
    taken_by: str | None = Field(description="null: given back, nobody has them.")
    taken_at: datetime | None
    advisories: list[str] = Field(
        description="Every advisory whose help answer of theirs this took (or gave back): one "
        "SMS answers them all."
    )


@router.post("/v1/advisories/{advisory_id}/rollcall/{citizen_id}/take", response_model=TakenRead)
def take_help(advisory_id: str, citizen_id: str, session: SessionDep, staff: Consul) -> TakenRead:
    """I am handling this citizen who needs help: the roll call shows my name beside every
    help answer of theirs, and `?taken=false` lists those nobody has yet. 409 (naming the
    holder) when another consul has them, and when they erased their record; taking again is
    harmless."""
    taken = rollcall.take_help(
        session,
        advisory=get_advisory(session, public_id=advisory_id),
        citizen_public_id=citizen_id,
        staff=staff.name,
        now=utcnow(),
    )
    return TakenRead.model_validate(taken, from_attributes=True)


@router.delete("/v1/advisories/{advisory_id}/rollcall/{citizen_id}/take", response_model=TakenRead)
def release_help(
    advisory_id: str, citizen_id: str, session: SessionDep, staff: Consul
) -> TakenRead:
    """Give a citizen back: by the consul who took them, or an admin (409 otherwise); also
    one who erased their record since."""
    released = rollcall.release_help(
        session,
        advisory=get_advisory(session, public_id=advisory_id),
        citizen_public_id=citizen_id,
        staff=staff.name,
        any_holder=staff.role == "admin",
    )
    return TakenRead.model_validate(released, from_attributes=True)


class ConfirmSafe(StrictModel):
    seen_help_at: UtcTime = Field(
        description="The `latest_help_at` of the roll-call row the consul read: another (a "
        "help answered since, under any advisory) is a 409, to be read before the case is "
        "closed."
    )


class ConfirmedSafeRead(BaseModel):
    citizen_id: str
    confirmed_by: str
    confirmed_at: datetime
    advisories: list[str] = Field(
        description="Every advisory whose help answer of theirs this closed: one SMS answers "
        "them all."
    )


@router.post(
    "/v1/advisories/{advisory_id}/rollcall/{citizen_id}/confirm-safe",
    response_model=ConfirmedSafeRead,
)
def confirm_safe(
    advisory_id: str, citizen_id: str, body: ConfirmSafe, session: SessionDep, staff: Consul
) -> ConfirmedSafeRead:
    """I reached this citizen who needs help and they are safe: a safe given by me (channel
    `staff`) replaces every help answer of theirs and closes the case. 409 when their answer
    is not help, when another consul has them (an admin may close it), and when a help came
    other than the newest one the consul read (`seen_help_at`)."""
    confirmed = rollcall.confirm_safe(
        session,
        advisory=get_advisory(session, public_id=advisory_id),
        citizen_public_id=citizen_id,
        staff=staff.name,
        any_holder=staff.role == "admin",
        seen_help_at=body.seen_help_at,
        now=utcnow(),
    )
    return ConfirmedSafeRead.model_validate(confirmed, from_attributes=True)


class HelpMessageItem(BaseModel):
    citizen_id: str
    contact: str | None = Field(description="Masked phone, else masked e-mail.")
    country: str | None = Field(description="The country of their current place.")
    received_at: datetime = Field(description="Their latest help message.")
    messages: int = Field(description="How many they sent (one row per citizen).")
    waiting: int = Field(
        description="How many are in no duty notice yet (the duty staff are paged about a "
        "citizen at most every 30 minutes; the next notice carries these)."
    )
    sms_opted_out: bool


class HelpMessagesRead(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[HelpMessageItem]


@router.get("/v1/help-messages", response_model=HelpMessagesRead)
def read_help_messages(
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
) -> HelpMessagesRead:
    """Citizens who cried for help with no check-in open, the latest first, one row each
    (contacts masked; their words come with the audited reveal)."""
    total, rows = help_messages.recent(session, registry=registry, limit=limit, offset=offset)
    return HelpMessagesRead(
        total=total,
        limit=limit,
        offset=offset,
        items=[HelpMessageItem.model_validate(row, from_attributes=True) for row in rows],
    )
