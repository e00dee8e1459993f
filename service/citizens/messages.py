"""Messages to citizens that are not advisory alerts: verification codes and "your contact moved
to another record" notices. Sent after the request's transaction committed, through the
configured notifiers, each within the shared rate limits and the daily SMS budget; advisory
alerts never pass through here and are never held by these limits."""

import logging
import uuid
from collections.abc import Mapping, Sequence

from service.citizens.verification import CODE_LIFE, CodeToSend, Notice
from service.config import Settings
from service.dispatch.notifiers.base import Notifier, OutgoingMessage, Sent
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
        allowed, budget_spent = _allowed(limits, item)
        if budget_spent:
            _tell_duty(notifiers, settings, sender=sender["en"])
        if not allowed:
            continue
        message = _message(item, sender=sender[item.language])
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


def _tell_duty(notifiers: Mapping[str, Notifier], settings: Settings, *, sender: str) -> None:
    """The day's SMS budget for codes is spent: duty staff learn it at once (alerts go on)."""
    text = (
        f"[{sender}] The daily SMS budget for verification codes and notices "
        f"({settings.sms_daily_budget}) is spent: no more codes go out today (UTC). Advisory "
        "alerts are not affected. Raise ANJEON_SMS_DAILY_BUDGET if this is real demand; "
        "look at /metrics and the audit log if it is not."
    )
    for address in settings.duty_email:
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


def _allowed(limits: RateLimits, item: CodeToSend | Notice) -> tuple[bool, bool]:
    """(send it, the budget was spent by this very charge)."""
    channel, address = item.channel, item.address
    try:
        if isinstance(item, Notice):
            limits.take_message(channel, address)  # type: ignore[arg-type]
        if channel == "sms":
            charge = limits.charge_sms_budget()
            if charge.just_spent:
                log.error("the daily SMS budget for codes and notices is spent: they stop today")
            return charge.allowed, charge.just_spent
    except TooManyRequests as exc:
        # Registration answers the same whatever happens here: nothing tells a caller that
        # this contact is being asked for codes elsewhere.
        log.warning("message held by a rate limit", extra={"channel": channel, "rule": exc.rule})
        return False, False
    except ServiceUnavailable:
        log.error("rate-limit storage unreachable: message not sent", extra={"channel": channel})
        return False, False
    return True, False


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
