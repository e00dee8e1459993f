"""Messages to citizens that are not advisory alerts: verification codes and "your contact moved
to another record" notices. Sent after the request's transaction committed, through the
configured notifiers, each within the shared rate limits and the daily SMS budget; advisory
alerts never pass through here and are never held by these limits."""

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence

from service.citizens.verification import CODE_LIFE, CodeToSend, Notice
from service.config import Settings
from service.dispatch.notifiers.base import Notifier, OutgoingMessage, Retry, Sent
from service.errors import ServiceUnavailable, TooManyRequests
from service.privacy import scrub_contacts
from service.rate_limits import RateLimits, number_keys

log = logging.getLogger("anjeon.citizens.messages")

_MINUTES = int(CODE_LIFE.total_seconds() // 60)
_CODE = {
    "ko": "[{sender}] 해외안전 알림 등록 인증번호 {code} ({minutes}분 안에 입력하세요)",
    "en": "[{sender}] Your travel-safety alert code is {code} (enter it within {minutes} minutes)",
}
_CODE_SUBJECT = {"ko": "[{sender}] 인증번호 {code}", "en": "[{sender}] Your code {code}"}
_MOVED = {
    "ko": "[{sender}] 회원님의 {what}가 다른 등록에서 인증되어 이 등록에서 빠졌습니다. "
    "본인이 한 일이 아니면 영사콜센터로 연락하세요.",
    "en": "[{sender}] Your {what} was verified on another registration and removed from this "
    "one. If that was not you, contact the consular call centre.",
}
_WHAT = {("ko", "sms"): "휴대전화 번호", ("ko", "email"): "이메일 주소"}


def deliver(
    notifiers: Mapping[str, Notifier],
    limits: RateLimits,
    *,
    settings: Settings,
    codes: Sequence[CodeToSend] = (),
    notices: Sequence[Notice] = (),
) -> int:
    """Send each message that the limits allow; returns how many went out. A code comes with
    its per-destination limits taken (service.codes_to_send, or a resend, which answers 429
    itself); a notice takes its own here."""
    sender = {"ko": settings.alert_sender_ko, "en": settings.alert_sender_en}
    sent = 0
    for item in [*codes, *notices]:
        if not to_allowed_country(item, settings.code_countries):
            log.warning("code not sent: destination country not allowed", extra={"channel": "sms"})
            continue
        if not _allowed(limits, item):
            continue
        message = _message(item, sender=sender[item.language])
        outcome = notifiers[item.channel].send(message)
        if isinstance(outcome, Retry) and outcome.unanswered and _allowed(limits, item):
            # Once more, on a new connection (counted again: the first may have been taken): a
            # code lost leaves an enrolment stalled until the citizen asks again, while a second
            # copy of the same code costs one SMS. Alerts are not sent here: the dispatcher
            # looks a message up before it sends again.
            outcome = notifiers[item.channel].send(message)
        if isinstance(outcome, Sent):
            sent += 1
        else:
            log.warning(
                "message not sent",
                extra={
                    "channel": item.channel,
                    "kind": type(item).__name__,
                    # A provider's refusal quotes the number or address ("… for 'To' +8210…").
                    "outcome": scrub_contacts(repr(outcome)),
                },
            )
    return sent


def to_allowed_country(item: CodeToSend | Notice, countries: list[str]) -> bool:
    """With an allow-list of destination countries, codes go to those countries' numbers only."""
    if item.channel != "sms" or not countries:
        return True
    try:
        return number_keys(item.address)[1] in countries
    except ValueError:
        return False


def duty_told_of_spent_budget(
    notifiers: Mapping[str, Notifier], settings: Settings
) -> Callable[[], None]:
    """What RateLimits.when_budget_spent calls once a day, from whichever charge found the
    day's SMS budget spent (a code, a notice, an answer to a text, a test send: before, only a
    code's or a notice's told anyone, and a probe's answers to texts spent it in silence): the
    log says so and duty staff get an e-mail, sent off the caller's thread, so that a webhook's
    answer never waits for the mail server."""

    def tell() -> None:
        log.error("the daily SMS budget for codes, notices and answers is spent: they stop today")
        threading.Thread(
            target=_tell_duty, args=(notifiers, settings), name="budget-spent", daemon=True
        ).start()

    return tell


def _tell_duty(notifiers: Mapping[str, Notifier], settings: Settings) -> None:
    """The day's SMS budget for codes is spent: duty staff learn it at once (alerts go on)."""
    sender = settings.alert_sender_en
    text = (
        f"[{sender}] The daily SMS budget for verification codes, notices and answers to texts "
        f"({settings.sms_daily_budget}) is spent: no more codes go out today (UTC). Advisory "
        "alerts are not affected. Raise ANJEON_SMS_DAILY_BUDGET if this is real demand; "
        "look at /metrics and the audit log if it is not."
    )
    for address in settings.duty_email:
        try:
            notifiers["email"].send(
                OutgoingMessage(
                    alert_id=0,
                    channel="email",
                    to=address,
                    text=text,
                    subject=f"[{sender}] SMS budget for codes spent",
                    reference=f"msg-{uuid.uuid4().hex}",
                )
            )
        except Exception:  # a thread of its own: its failure is logged, not raised
            log.exception("duty staff not told that the SMS budget is spent")


def _allowed(limits: RateLimits, item: CodeToSend | Notice) -> bool:
    channel, address = item.channel, item.address
    try:
        if isinstance(item, Notice):
            limits.take_message(channel, address)  # type: ignore[arg-type]
        if channel == "sms":
            return limits.charge_sms_budget().allowed
    except TooManyRequests as exc:
        # Registration answers the same whatever happens here: nothing tells a caller that
        # this contact is being asked for codes elsewhere.
        log.warning("message held by a rate limit", extra={"channel": channel, "rule": exc.rule})
        return False
    except ServiceUnavailable:
        log.error("rate-limit storage unreachable: message not sent", extra={"channel": channel})
        return False
    return True


def _message(item: CodeToSend | Notice, *, sender: str) -> OutgoingMessage:
    lang = item.language if item.language in _CODE else "en"
    if isinstance(item, CodeToSend):
        values = {"sender": sender, "code": item.code, "minutes": _MINUTES}
        text, subject = _CODE[lang].format(**values), _CODE_SUBJECT[lang].format(**values)
    else:
        moved = "sms" if item.channel == "email" else "email"
        what = _WHAT.get((lang, moved), "phone number" if moved == "sms" else "e-mail address")
        text = _MOVED[lang].format(sender=sender, what=what)
        subject = text.split("]", 1)[0] + "]"
    return OutgoingMessage(
        alert_id=0,
        channel=item.channel,
        to=item.address,
        text=text,
        subject=subject,
        reference=f"msg-{uuid.uuid4().hex}",
    )
