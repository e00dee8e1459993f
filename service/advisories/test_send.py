"""A test send: the advisory rendered exactly as a citizen would get it (language, segment
budget, check-in ask), marked [TEST], to one staff contact. No alert row is made and no citizen
is told. Prepared from a session (reads only), sent after it, outside any transaction."""

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from service.advisories.approval import under_review
from service.advisories.models import Advisory
from service.advisories.preview import content_of_draft
from service.advisories.service import draft_of, get_advisory
from service.citizens.contact import (
    ContactError,
    can_receive_sms,
    mask_email,
    mask_phone,
    normalise_email,
    normalise_phone,
)
from service.citizens.verification import contact_hash
from service.dispatch import sms_text
from service.dispatch.content import AlertContent
from service.dispatch.notifiers.base import Failed, Notifier, OutgoingMessage, Retry, Sent
from service.dispatch.recipients import ContentCache
from service.dispatch.render import ASK, Renderer
from service.dispatch.sms_opt_out import database_now, hear_opt_out, stopped_at
from service.errors import Conflict, FieldError, InvalidInput
from service.privacy import PersonalDataVault

MARK = "[TEST] "
# Links that look like a citizen's (of the same length, so the SMS is cut the same way) but
# open nothing: neither is a valid alert reference or check-in token.
_DETAILS = "/a/TEST." + "0" * 24
_CHECKIN = "/c/TEST-" + "0" * 26
# Only the words: the budget is applied once the mark is part of them.
_UNCUT = 1_000


@dataclass(frozen=True)
class TestSend:
    message: OutgoingMessage
    to: str  # masked
    language: str  # the language rendered
    begun: datetime  # on the database's clock, no later than the send
    stopped: bool = False  # the number replied STOP: not sent


@dataclass(frozen=True)
class TestOutcome:
    said: str  # "sent", or why the provider did not take it
    # The provider refused the number as opted out there (Twilio 21610): a STOP we never heard.
    opted_out: bool = False


def prepare_test_send(
    session: Session,
    *,
    advisory_id: str,
    phone: str | None,
    email: str | None,
    language: str,
    renderer: Renderer,
    base_url: str,
    default_region: str,
    vault: PersonalDataVault,
    now: datetime,
) -> TestSend:
    """The advisory's current revision as a citizen of `language` would get it on the channel
    of the one contact given, marked [TEST]; 404 unknown, 409 cancelled, 422 a bad contact."""
    begun = database_now(session, now)
    advisory = get_advisory(session, public_id=advisory_id)
    if advisory.status == "cancelled":
        raise Conflict("the advisory is cancelled: there is nothing to test")
    channel, to = _contact(phone, email, default_region=default_region)
    # Nothing is texted to a number that said STOP, a staff phone included (a probe's test
    # send texted one, with a check-in ask to answer); refused by send_test, once the send's
    # limit is taken (a review: refused for free, it told a key who said STOP, and when).
    stopped = channel == "sms" and stopped_at(session, contact_hash(vault, "sms", to)) is not None
    content = _content(session, advisory)
    lang = content.language_for(language)
    base = base_url.rstrip("/")
    details = base + _DETAILS
    checkin = base + _CHECKIN if content.asks_checkin else ""
    reference = f"test-{uuid.uuid4().hex}"
    if channel == "sms":
        text = _sms(renderer, content, language=lang, link=checkin or details)
        message = OutgoingMessage(
            alert_id=0,
            channel="sms",
            to=to,
            text=text,
            reference=reference,
            segments=sms_text.segments(text),
        )
        return TestSend(message, mask_phone(to), lang, begun, stopped)
    mail = renderer.email(content, language=lang, link=details, checkin=checkin)
    message = OutgoingMessage(
        alert_id=0,
        channel="email",
        to=to,
        text=MARK + mail.text,
        subject=MARK + mail.subject,
        html=mail.html.replace("<body>", f"<body>\n<p><strong>{MARK.strip()}</strong></p>", 1),
        reference=reference,
    )
    return TestSend(message, mask_email(to), lang, begun)


def send_test(notifiers: dict[str, Notifier], test: TestSend) -> TestOutcome:
    """Send it (outside any transaction): "sent", or why the provider did not take it; 409 for
    a number that replied STOP."""
    if test.stopped:
        raise Conflict("this number replied STOP to our SMS: nothing is texted to it until START")
    outcome = notifiers[test.message.channel].send(test.message)
    if isinstance(outcome, Sent):
        return TestOutcome("sent")
    if isinstance(outcome, Retry | Failed):
        said = f"not sent: {outcome.reason}" + (f" ({outcome.code})" if outcome.code else "")
        return TestOutcome(said, opted_out=isinstance(outcome, Failed) and outcome.opted_out)
    raise TypeError(f"a notifier answered {outcome!r}")


def keep_refused_stop(
    session: Session, *, vault: PersonalDataVault, test: TestSend, now: datetime
) -> None:
    """The provider refused the test SMS because the number said STOP to it: kept as the
    number's STOP, as the dispatcher keeps a citizen's (a staff phone may also be registered;
    its next alert would only be refused again, and staff would not see why)."""
    hear_opt_out(
        session,
        phone_hash=contact_hash(vault, "sms", test.message.to),
        stop=True,
        now=now,
        refused_since=test.begun,
    )


def _contact(
    phone: str | None, email: str | None, *, default_region: str
) -> tuple[Literal["sms", "email"], str]:
    if (phone is None) == (email is None):
        message = "give exactly one of phone and email"
        raise InvalidInput.of([FieldError("phone", message), FieldError("email", message)])
    try:
        if phone is not None:
            number = normalise_phone(phone, default_region=default_region)
            if not can_receive_sms(number):
                raise ContactError("this number cannot receive SMS (not a mobile number)")
            return "sms", number
    except ContactError as exc:
        raise InvalidInput("phone", str(exc)) from exc
    try:
        return "email", normalise_email(email or "")
    except ContactError as exc:
        raise InvalidInput("email", str(exc)) from exc


def _content(session: Session, advisory: Advisory) -> AlertContent:
    """The words of what waits for approval when something does (what the approver decides
    on), else of the current revision, read as the dispatcher reads them."""
    waiting = under_review(session, advisory)
    if waiting is not None:
        found = content_of_draft(waiting, public_id=advisory.public_id, revision=advisory.revision)
        return replace(found, advisory_public_id=f"test-{uuid.uuid4()}")
    key = (advisory.id, advisory.revision)
    found = ContentCache().load(session, {key}).get(key)
    if found is None:  # no revision stored yet: its current content
        found = content_of_draft(
            draft_of(advisory), public_id=advisory.public_id, revision=advisory.revision
        )
    # Not the renderer's cached words of a real send: those are cut without the mark.
    return replace(found, advisory_public_id=f"test-{uuid.uuid4()}")


def _sms(renderer: Renderer, content: AlertContent, *, language: str, link: str) -> str:
    """The SMS as Renderer.sms makes it, with the mark at the start of the words that are cut
    to the segment budget; the check-in ask and the link are never cut."""
    uncut = Renderer(sender=renderer.sender, max_segments=_UNCUT)
    whole = uncut.sms(content, language=language, link=link).text
    words = whole[: -len(link)].rstrip()
    tail = f"{ASK[language]} {link}" if content.asks_checkin else link
    return sms_text.fit(MARK + words, tail, max_segments=renderer.max_segments)
