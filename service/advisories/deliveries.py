"""Deliveries as staff see them: the ledger read by advisory or status with contacts masked,
and a failed alert put back in the queue."""

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory, AdvisoryRevision
from service.citizens.models import Citizen
from service.citizens.service import Registry, masked_contacts
from service.dispatch.schemas import AlertRead, RevisionCounts
from service.errors import Conflict, NotFound
from service.ledger import outbox, states
from service.ledger.models import Alert
from service.ledger.wake import mark_enqueued

Counts = dict[str, dict[str, int]]  # status → channel → rows


def counts_for(session: Session, *, advisory: Advisory) -> tuple[Counts, list[RevisionCounts]]:
    """Counts by status and channel ({"sent": {"sms": 3}}): of every row of the advisory, and
    of each revision's apart, newest first, with its "are you safe?" asks sent on their own
    (roll-call rounds, escalations) apart from its alerts. A cancelled advisory's all-clears
    are a revision of their own: summed with the warnings they follow, "sent 4" of 4 citizens
    read as 8 sends. Those kept when its rows were forgotten, once they were."""
    if advisory.ledger_kept is not None:
        kept = advisory.ledger_kept["deliveries"]
        return kept["counts"], [RevisionCounts.model_validate(r) for r in kept["by_revision"]]
    return _counted(session, advisory_id=advisory.id)


def figures_to_keep(session: Session, *, advisory: Advisory) -> dict[str, Any]:
    """counts_for's figures, as kept when the advisory's rows are forgotten (JSON)."""
    counts, by_revision = _counted(session, advisory_id=advisory.id)
    return {"counts": counts, "by_revision": [r.model_dump() for r in by_revision]}


def _counted(session: Session, *, advisory_id: int) -> tuple[Counts, list[RevisionCounts]]:
    asked = (Alert.checkin_round > 0).label("asked")
    # Counted again apart, as part of their status, in the same pass over the rows (a large
    # send has millions, and an open console asks every 3 s).
    subset = case(*((and_(*where), label) for label, where in _SUBSETS.items())).label("subset")
    rows = session.execute(
        select(Alert.revision, asked, Alert.status, Alert.channel, subset, func.count())
        .where(Alert.advisory_id == advisory_id)
        .group_by(Alert.revision, asked, Alert.status, Alert.channel, subset)
    ).all()
    changes = dict(
        session.execute(
            select(AdvisoryRevision.revision, AdvisoryRevision.change).where(
                AdvisoryRevision.advisory_id == advisory_id
            )
        ).all()
    )
    total: Counts = {}
    revisions: dict[int, tuple[Counts, Counts]] = {}
    found = [(r, bool(a), s, c, n) for r, a, s, c, _, n in rows]
    found += [(r, bool(a), label, c, n) for r, a, _, c, label, n in rows if label]
    for revision, is_ask, status, channel, n in found:
        alerts, asks = revisions.setdefault(revision, ({}, {}))
        for counts in (total, asks if is_ask else alerts):
            by_channel = counts.setdefault(status, {})
            by_channel[channel] = by_channel.get(channel, 0) + n
    return total, [
        RevisionCounts(
            revision=revision,
            change=changes.get(revision, "issued"),
            counts=alerts,
            asks=asks,
        )
        for revision, (alerts, asks) in sorted(revisions.items(), reverse=True)
    ]


# Counted again apart, as part of their status (a row is in one at most): "deferred", held for
# the citizen's quiet hours (of retry_wait: waiting, not failing); "maybe_sent", ended unsent
# though a try's outcome was lost: it may have reached them (a probe's staff read 129 warned
# where 157 were).
_SUBSETS = {
    "deferred": (Alert.status == states.RETRY_WAIT, Alert.error_code == outbox.QUIET_HOURS),
    "maybe_sent": (Alert.status.in_(states.ENDED_UNSENT), Alert.outcome_unknown.is_(True)),
}


def list_alerts(
    session: Session,
    *,
    registry: Registry,
    advisory_id: int | None = None,
    alert_id: int | None = None,
    statuses: Collection[str] = (),
    channel: str | None = None,
    limit: int,
    offset: int,
) -> tuple[int, list[AlertRead]]:
    """One page of alerts, newest first, with contacts masked; and how many match in all (in
    any of `statuses`, when given)."""
    where = []
    if advisory_id is not None:
        where.append(Alert.advisory_id == advisory_id)
    if alert_id is not None:
        where.append(Alert.id == alert_id)
    if statuses:
        where.append(Alert.status.in_(statuses))
    if channel is not None:
        where.append(Alert.channel == channel)
    total = session.scalar(select(func.count()).select_from(Alert).where(*where)) or 0
    rows = session.execute(
        select(Alert, Advisory.public_id, Advisory.exercise, Citizen)
        .join(Advisory, Advisory.id == Alert.advisory_id)
        .join(Citizen, Citizen.id == Alert.citizen_id)
        .where(*where)
        .order_by(Alert.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return total, [_read(registry, *row) for row in rows]


def _read(
    registry: Registry, alert: Alert, advisory_public_id: str, exercise: bool, citizen: Citizen
) -> AlertRead:
    contacts = masked_contacts(registry, citizen)
    return AlertRead(
        id=alert.id,
        advisory_id=advisory_public_id,
        revision=alert.revision,
        exercise=exercise,
        citizen_id=citizen.public_id,
        channel=alert.channel,
        contact=contacts.phone if alert.channel == "sms" else contacts.email,
        status=alert.status,
        attempts=alert.attempts,
        segments=alert.segments,
        error_code=alert.error_code,
        last_error=alert.last_error,
        fallback_of=alert.fallback_of,
        created_at=alert.created_at,
        sent_at=alert.sent_at,
        delivered_at=alert.delivered_at,
        opened_at=alert.opened_at,
        updated_at=alert.updated_at,
        deferred_until=alert.due_at
        if alert.status == states.RETRY_WAIT and alert.error_code == outbox.QUIET_HOURS
        else None,
    )


def retry_alert(
    session: Session, *, alert_id: int, now: datetime, settle_s: Mapping[str, float]
) -> Alert:
    """Put a failed alert back in the queue, as new (its history stays in last_error). One
    whose last try's outcome is unknown is due no sooner than its channel's settle time after
    that try (`settle_s`, by channel): a probe's retry at once was looked up before Twilio had
    made the message, and went twice."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("no alert with this id")
    if alert.status not in states.RETRYABLE:
        raise Conflict(
            f"only {', '.join(states.RETRYABLE)} alerts can be retried; this one is {alert.status}"
        )
    citizen = session.get(Citizen, alert.citizen_id)
    if citizen is None or citizen.status == "erased":
        raise Conflict("the citizen has erased their record")
    due = None
    if alert.outcome_unknown and alert.updated_at is not None:
        settled = alert.updated_at + timedelta(seconds=settle_s.get(alert.channel, 0.0))
        due = settled if settled > now else None
    outbox.requeue(session, alert_id=alert_id, now=now, due_at=due)
    session.refresh(alert)
    mark_enqueued(session)
    return alert
