"""Check-in requests in the ledger: rows with checkin_round >= 1 ("are you safe?" on its own,
for a roll call or asked again), in the urgency class above every advisory when the advisory
asks by itself (priority.of_roll_call)."""

from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from service.db import UTCDateTime
from service.ledger import priority, states
from service.ledger.enqueue import COLUMNS, ON_CONFLICT, insert_round_alerts
from service.ledger.models import WAITING_SQL, Ahead
from service.ledger.wake import mark_enqueued

# Everyone the advisory alerted (not erased since), on each channel it alerted them on.
_ROUND = text(
    f"INSERT INTO alert ({COLUMNS}, checkin_round) "  # noqa: S608 - constant text, values bound
    "SELECT DISTINCT a.advisory_id, :revision, a.citizen_id, a.channel, :priority, "
    f"'{states.PENDING}', :now, :round "
    "FROM alert a JOIN citizen c ON c.id = a.citizen_id "
    f"WHERE a.advisory_id = :advisory_id AND a.checkin_round = 0 "
    f"AND a.status <> '{states.CANCELLED}' AND c.status = 'active'{ON_CONFLICT}"
).bindparams(bindparam("now", type_=UTCDateTime()))


def enqueue_round(
    session: Session,
    *,
    advisory_id: int,
    revision: int,
    checkin_round: int,
    urgency: int,
    now: datetime,
) -> int:
    """Queue round `checkin_round` of the check-in to everyone the advisory alerted, in class
    `urgency` (priority.of_roll_call); returns how many messages were queued."""
    result = session.execute(
        _ROUND,
        {
            "advisory_id": advisory_id,
            "revision": revision,
            "priority": urgency,
            "now": now,
            "round": checkin_round,
        },
    )
    queued = result.rowcount or 0
    # Everyone the advisory alerted is asked now, travellers told ahead of their stay too: none
    # of their rows waits for them to get there any longer (geomatch/arrivals.py).
    session.execute(_ASKED_AHEAD, {"advisory_id": advisory_id})
    if queued:
        mark_enqueued(session)
    return queued


# Through the partial index ix_alert_told_ahead (spelled as it is).
_ASKED_AHEAD = text(
    f"UPDATE alert SET told_ahead = {int(Ahead.ASKED)} "  # noqa: S608 - constants only
    f"WHERE advisory_id = :advisory_id AND {WAITING_SQL}"
)


def enqueue_asks(
    session: Session,
    *,
    advisory_id: int,
    revision: int,
    asks: list[tuple[int, str, int]],
    now: datetime,
    urgency: int = priority.CHECK_IN,
) -> int:
    """Queue these (citizen id, channel, round) check-in requests, in class `urgency`; returns
    how many were new."""
    rows = [
        (advisory_id, revision, citizen_id, channel, urgency, checkin_round)
        for citizen_id, channel, checkin_round in asks
    ]
    queued = insert_round_alerts(session.connection(), rows=rows, now=now)
    if queued:
        mark_enqueued(session)
    return queued
