"""Delivery reports from providers' webhooks, and citizens opening an alert's link. Reports may
repeat and arrive out of order; an alert's state only ever moves forward, and a report counts
only for the send (attempt) it names."""

from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.citizens.models import Citizen
from service.db import read_first
from service.dispatch import metrics
from service.dispatch.details import details_page
from service.dispatch.dispatcher import OTHER_CHANNEL
from service.dispatch.notifiers.base import DeliveryReport, Notifier, ReportRejected
from service.dispatch.reference import Links
from service.dispatch.render import Renderer
from service.errors import Forbidden, NotFound
from service.ledger import outbox, states
from service.ledger.models import ERROR_CODE_LENGTH, Alert, stored_provider_ref
from service.ledger.wake import mark_enqueued
from service.privacy import scrub_contacts


def receive_report(
    session: Session,
    *,
    notifiers: Mapping[str, Notifier],
    name: str,
    url: str,
    query: Mapping[str, str],
    form: Mapping[str, str],
    headers: Mapping[str, str],
    now: datetime,
    hold_sender: Callable[[str], datetime] | None = None,
) -> str | None:
    """A report POSTed to /v1/webhooks/{name}/status: the notifier of that name proves it is
    genuine and reads it; our own query (alert, attempt) says which send it is about. A queue
    overflow about the alert's current send, heard for the first time, holds the channel's
    sender (`hold_sender`, before any write: it may be a call to Redis) and sends the alert
    again once the hold ends. A repeated one holds nothing: a probe replayed one signed report
    every 30 s and held every SMS, level 4 included, for as long as it went on."""
    found = [(channel, n) for channel, n in notifiers.items() if n.name == name]
    if not found:
        raise Forbidden(f"no notifier named {name!r} takes delivery reports here")
    channel, notifier = found[0]
    try:
        report = notifier.read_report(url=url, form=form, headers=headers)
    except ReportRejected as exc:
        raise Forbidden(str(exc)) from exc
    alert_id, attempt = _number(query.get("alert")), _number(query.get("attempt"))
    if alert_id is None:
        raise NotFound("the report names no alert")
    if report is None:
        return None
    resend_at = now
    if report.queue_overflow and hold_sender:
        # Read apart: the hold may wait on Redis, and on SQLite a write transaction holds the
        # database's one write lock. apply_report checks again under the row's lock.
        with read_first(session):
            alert = session.get(Alert, alert_id)
            news = alert is not None and _changes(
                alert, channel=channel, attempt=attempt, report=report
            )
        if news:
            resend_at = hold_sender(channel)
    other = OTHER_CHANNEL[channel]
    return apply_report(
        session,
        alert_id=alert_id,
        attempt=attempt,
        channel=channel,
        report=report,
        now=now,
        resend_at=resend_at,
        fall_back_to=other if other in notifiers else None,
    )


def _number(text: str | None) -> int | None:
    # ASCII digits only ("²".isdigit() is true), and within a 64-bit key.
    if not text or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def apply_report(
    session: Session,
    *,
    alert_id: int,
    attempt: int | None,
    channel: str,
    report: DeliveryReport,
    now: datetime,
    resend_at: datetime | None = None,
    fall_back_to: str | None = None,
) -> str | None:
    """Apply one report; returns the alert's status afterwards, or None if unknown to us. A
    queue overflow (the message never left the provider) puts the alert back in the queue,
    due at `resend_at`, with a fresh retry budget: the provider never tried it. Any other
    undelivered report queues the same alert on the channel `fall_back_to`, when the citizen
    has a contact there, as a send refused at once does."""
    # populate_existing: read afresh under the lock, whatever an earlier read loaded.
    alert = session.get(Alert, alert_id, with_for_update=True, populate_existing=True)
    if alert is None or alert.channel != channel:
        return None
    if not _changes(alert, channel=channel, attempt=attempt, report=report):
        return alert.status
    target = report.status
    values: dict = {"status": target, "updated_at": now}
    erased = session.scalar(select(Citizen.status).where(Citizen.id == alert.citizen_id))
    if alert.provider_ref is None and erased != "erased":
        # Never again once the citizen erased themselves: the id finds their number in the
        # provider's log (a review saw a "delivered" report write it back).
        values["provider_ref"] = stored_provider_ref(report.provider_ref)
    if target == states.SENT or alert.sent_at is None:
        values["sent_at"] = alert.sent_at or now
    if target == states.DELIVERED:
        values["delivered_at"] = now
    if target == states.UNDELIVERED:
        values["error_code"] = (report.error_code or "")[:ERROR_CODE_LENGTH] or None
        values["last_error"] = (
            scrub_contacts(report.detail) or "the provider reports it undelivered"
        )
    # Guarded on the status read above: a concurrent report cannot be overwritten.
    session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == alert.status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    metrics.DELIVERY.labels(target).inc()
    if target == states.UNDELIVERED and report.queue_overflow:
        # Once per send: a repeated report names the same attempt and finds the row pending,
        # and the resend is claimed under a new attempt number that this report does not name.
        outbox.requeue(session, alert_id=alert_id, now=now)
        session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.status == states.PENDING)
            .values(due_at=resend_at or now, last_error="queue overflow at the provider: resent")
            .execution_options(synchronize_session=False)
        )
        metrics.DELIVERY.labels("requeued").inc()
        return states.PENDING
    # Found by a probe: an SMS reported unreachable (30003, a phone off while roaming) ended
    # there, and the citizen's e-mail was never used.
    falls_back = (
        target == states.UNDELIVERED
        and fall_back_to is not None
        and _reachable(session, alert, fall_back_to)
    )
    if falls_back and outbox.enqueue_fallback(
        session, failed=alert, channel=str(fall_back_to), now=now
    ):
        mark_enqueued(session)
        metrics.DELIVERY.labels("fallback").inc()
    return target


def _reachable(session: Session, alert: Alert, channel: str) -> bool:
    """Whether the alert's citizen, not erased, has a contact on `channel`."""
    sealed = Citizen.phone_sealed if channel == "sms" else Citizen.email_sealed
    return bool(
        session.scalar(
            select(sealed.is_not(None)).where(
                Citizen.id == alert.citizen_id, Citizen.status != "erased"
            )
        )
    )


def _changes(alert: Alert, *, channel: str, attempt: int | None, report: DeliveryReport) -> bool:
    """Whether the report is news about the alert's current send."""
    if alert.channel != channel:
        return False
    this_message = bool(alert.provider_ref) and alert.provider_ref == stored_provider_ref(
        report.provider_ref
    )
    if (
        attempt is not None
        and attempt != alert.attempts
        and not this_message
        and not _lost_try_found(alert, attempt)
    ):
        # A report on an earlier send of this alert (a resend, a staff retry). Unless the
        # row holds that send's message: a later claim found it by look-up (the try's answer
        # was lost), and the provider calls back the URL it was created with, which names the
        # attempt that made it (a probe saw such rows stay "sent", and a 30001 never resent).
        return False
    if alert.provider_ref and not this_message:
        return False  # a report on some other message: not this alert's
    return states.allowed(alert.status, report.status)


def _lost_try_found(alert: Alert, attempt: int) -> bool:
    """Whether a report on an earlier try is news of the message a later claim is looking
    for: the row holds no message yet and its last try's outcome was lost (claimed again, or
    waiting after a look-up failed). The report shows that try's message was made, as the
    look-up would (a review: a report in that window was dropped, the look-up then recorded
    "sent", and nothing moved the row again)."""
    return (
        # Not a try from before the row was queued again (a staff retry, a 30001): that
        # message's fate is known, and a late or replayed report on it must not settle the
        # new send (a review).
        alert.retry_base < attempt < alert.attempts
        and alert.provider_ref is None
        and alert.outcome_unknown
        and alert.status in (states.CLAIMED, states.RETRY_WAIT)
    )


def details_for(
    session: Session,
    *,
    links: Links,
    reference: str,
    renderer: Renderer,
    now: datetime,
    seen: bool,
) -> str:
    """The page behind an alert's link; with `seen`, the citizen said they read it (the first
    time is kept)."""
    alert_id = links.parse(reference)
    alert = session.get(Alert, alert_id) if alert_id is not None else None
    if alert is None:
        raise NotFound("no such alert")
    if seen and alert.opened_at is None:
        alert.opened_at = now
    return details_page(session, alert=alert, renderer=renderer, seen=alert.opened_at is not None)
