"""Asking again: a check-in without an answer `after` the last ask was sent is asked once more,
on the citizen's other channel when they have one, at most `rounds` more times. An ask that
failed on every channel it went to is asked again at once; one still in the queue is waited for
(at 1 SMS/s a burst takes hours, and the clock starts when the citizen could have read it)."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.checkin.answers import OPEN_FOR, asking_revisions, asks
from service.checkin.models import Checkin
from service.ledger import checkins, priority, states
from service.ledger.models import Alert

_SENT = (states.SENT, states.DELIVERED)


@dataclass
class _Asked:
    channels: set[str] = field(default_factory=set)  # every channel the citizen was asked on
    # ask number (0: the advisory's own alert, n: round n) -> [(channel, status, sent_at)]
    asks: dict[int, list[tuple[str, str, datetime | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )


def escalate(session: Session, *, after: timedelta, rounds: int, now: datetime) -> int:
    """Queue the next ask for every check-in that is due one; returns how many were queued."""
    if rounds <= 0:
        return 0
    advisories = session.execute(
        select(Advisory.id, Advisory.revision, Advisory.level).where(
            Advisory.status == "active",
            or_(Advisory.expires.is_(None), Advisory.expires > now),
            Advisory.alerts_citizens.is_(True),
        )
    ).all()
    queued = 0
    for advisory_id, revision, level in advisories:
        asking = asking_revisions(session, advisory_id)
        due = _due(
            session, advisory_id=advisory_id, asking=asking, after=after, rounds=rounds, now=now
        )
        queued += checkins.enqueue_asks(
            session,
            advisory_id=advisory_id,
            revision=revision,
            asks=due,
            now=now,
            urgency=priority.of_roll_call(level, asks=bool(asking)),
        )
    return queued


def _due(
    session: Session,
    *,
    advisory_id: int,
    asking: list[int],
    after: timedelta,
    rounds: int,
    now: datetime,
) -> list[tuple[int, str, int]]:
    rounds_exist = session.scalar(
        select(Alert.id).where(Alert.advisory_id == advisory_id, Alert.checkin_round > 0).limit(1)
    )
    if not asking and rounds_exist is None:
        return []  # an advisory that never asked (levels 1-2 without a roll call)
    answered = (
        select(Checkin.id)
        .where(Checkin.advisory_id == Alert.advisory_id, Checkin.citizen_id == Alert.citizen_id)
        .exists()
    )
    rows = session.execute(
        select(
            Alert.citizen_id,
            Alert.channel,
            Alert.checkin_round,
            # Ended unsent, but its try's outcome was lost: it may have reached them, about
            # when it was last written. Waited for as one sent then, not asked again at once.
            case(
                (
                    and_(Alert.status.in_(states.WITHDRAWN), Alert.outcome_unknown),
                    states.SENT,
                ),
                else_=Alert.status,
            ),
            func.coalesce(Alert.sent_at, Alert.updated_at, Alert.created_at),
        )
        .where(
            Alert.advisory_id == advisory_id,
            Alert.created_at >= now - OPEN_FOR,
            asks(session, advisory_id, revisions=asking),
            # Counted as failed asks, these were asked again at once, ahead of everything:
            # "are you safe?" about a level 3 they never got (a probe: 155 of 300 left
            # outside a narrowed area).
            # (One whose try's outcome was lost may have reached them: it counts as an ask.)
            or_(Alert.status.not_in(states.WITHDRAWN), Alert.outcome_unknown),
            ~answered,
        )
        .order_by(Alert.citizen_id)
    ).all()
    asked: dict[int, _Asked] = defaultdict(_Asked)
    for citizen_id, channel, number, status, sent_at in rows:
        entry = asked[citizen_id]
        entry.channels.add(channel)
        entry.asks[number].append((channel, status, sent_at))
    due = []
    for citizen_id, entry in asked.items():
        if len(entry.asks) > rounds:  # the first ask and `rounds` more
            continue
        last_number = max(entry.asks)
        last = entry.asks[last_number]
        if any(status in states.OPEN for _, status, _ in last):
            continue  # not sent yet
        sent = [at for _, status, at in last if status in _SENT and at is not None]
        if sent and max(sent) + after > now:
            continue
        reached = {channel for channel, status, _ in last if status in _SENT}
        for channel in next_channels(entry.channels, reached):
            due.append((citizen_id, channel, last_number + 1))
    return due


def next_channels(channels: set[str], last: set[str]) -> list[str]:
    """Where to ask again: a channel the last ask did not reach them on, when they have one;
    else SMS (the channel they answer on); else what they have."""
    other = sorted(channels - last)
    if other:
        return other[:1] if "sms" not in other else ["sms"]
    if "sms" in channels:
        return ["sms"]
    return sorted(channels)[:1]
