"""Dispatch metrics on /metrics: what was sent, failed and retried, how deep and how old the
queue is, and how long sends take."""

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.dispatch.models import OPEN_STATES, Alert
from service.dispatch.outbox import Decision

ENQUEUED = Counter("anjeon_alerts_enqueued_total", "Alert rows written to the ledger")
SENT = Counter("anjeon_alerts_sent_total", "Alerts accepted by a provider", ["channel"])
FAILED = Counter("anjeon_alerts_failed_total", "Alerts that failed for good", ["channel", "code"])
RETRIES = Counter("anjeon_alert_retries_total", "Sends to be tried again", ["channel"])
DROPPED = Counter(
    "anjeon_alerts_not_sent_total",
    "Alerts not sent: expired, cancelled or superseded",
    ["channel", "status"],
)
DELIVERY = Counter(
    "anjeon_alert_delivery_reports_total", "Delivery status callbacks applied", ["status"]
)
QUEUE_DEPTH = Gauge("anjeon_alert_queue_depth", "Alerts not yet sent (pending, retry, claimed)")
OLDEST_AGE = Gauge("anjeon_alert_oldest_open_seconds", "Age of the oldest alert not yet sent")
SEND_SECONDS = Histogram(
    "anjeon_alert_send_seconds",
    "Time one send to a provider took",
    ["notifier"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def count(channel: str, decision: Decision) -> None:
    if decision.status == "sent":
        SENT.labels(channel).inc()
    elif decision.status == "failed":
        FAILED.labels(channel, decision.code or "").inc()
    elif decision.status == "retry_wait":
        RETRIES.labels(channel).inc()
    else:
        DROPPED.labels(channel, decision.status).inc()


def observe_queue(factory: sessionmaker[Session], *, now: datetime) -> None:
    """Queue depth and the oldest open row's age (the open-rows index keeps this cheap)."""
    with factory() as session:
        depth, oldest = session.execute(
            select(func.count(), func.min(Alert.id)).where(Alert.status.in_(OPEN_STATES))
        ).one()
        created = (
            session.get(Alert, oldest).created_at if oldest is not None else None  # type: ignore[union-attr]
        )
    QUEUE_DEPTH.set(depth)
    OLDEST_AGE.set((now - created).total_seconds() if created else 0)
