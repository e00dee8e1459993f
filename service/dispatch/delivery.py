"""Delivery reports: Twilio's status callbacks, and citizens opening an alert's link. Reports
may repeat and arrive out of order; an alert's state only ever moves forward."""

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.dispatch import metrics
from service.dispatch.models import Alert

# How far along each state is; a report that would move an alert back is ignored.
PROGRESS = {
    "pending": 0,
    "retry_wait": 0,
    "claimed": 1,
    "sent": 2,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
    "expired": 3,
    "cancelled": 3,
    "superseded": 3,
}
# Twilio's MessageStatus values, as our states.
TWILIO_STATUS = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "undelivered",
    "canceled": "undelivered",
}


def apply_twilio_status(
    session: Session,
    *,
    alert_id: int,
    message_sid: str,
    message_status: str,
    error_code: str | None,
    now: datetime,
) -> str | None:
    """Apply one callback; returns the alert's status afterwards, or None if unknown to us."""
    alert = session.get(Alert, alert_id, with_for_update=True)
    if alert is None or alert.channel != "sms" or not message_sid:
        return None
    if alert.provider_ref and message_sid and alert.provider_ref != message_sid:
        return alert.status  # a report on some other message: not this alert's
    target = TWILIO_STATUS.get(message_status)
    if target is None or PROGRESS[target] <= PROGRESS.get(alert.status, 0):
        return alert.status
    if alert.status in ("failed", "expired", "cancelled", "superseded"):
        return alert.status
    values: dict = {"status": target, "updated_at": now, "provider_ref": message_sid or None}
    if target == "sent" or alert.sent_at is None:
        values["sent_at"] = alert.sent_at or now
    if target == "delivered":
        values["delivered_at"] = now
    if target == "undelivered":
        values["error_code"] = error_code or None
        values["last_error"] = f"Twilio reports {message_status}" + (
            f" (error {error_code})" if error_code else ""
        )
    # Guarded on the status read above: a concurrent report cannot be overwritten.
    session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == alert.status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    metrics.DELIVERY.labels(target).inc()
    return target


def record_opened(session: Session, *, alert_id: int, now: datetime) -> Alert | None:
    alert = session.get(Alert, alert_id)
    if alert is not None and alert.opened_at is None:
        alert.opened_at = now
    return alert
