"""Cancellation notices: an advisory's all-clear goes to whoever may have been told of it."""

from datetime import datetime

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.db import UTCDateTime
from service.ledger import priority, states
from service.ledger.enqueue import COLUMNS, ON_CONFLICT
from service.ledger.models import Alert
from service.ledger.wake import mark_enqueued

# Rows that may have reached the citizen (states.MAY_HAVE_REACHED_SQL); an all-clear goes to
# each. Run after the queued rows expired: one whose outcome is unknown still counts.
_ENQUEUE = text(
    f"INSERT INTO alert ({COLUMNS}) "  # noqa: S608 - constant text, values are bound
    "SELECT DISTINCT advisory_id, :revision, citizen_id, channel, :priority, "
    f"'{states.PENDING}', :now "
    "FROM alert WHERE advisory_id = :advisory_id AND revision < :revision "
    f"AND {states.MAY_HAVE_REACHED_SQL}{ON_CONFLICT}"
).bindparams(bindparam("now", type_=UTCDateTime()))


def enqueue_cancellation(
    session: Session, *, advisory_id: int, revision: int, now: datetime
) -> int:
    """Queue the cancellation (revision `revision`) to everyone told of an earlier revision, and
    stop what was not sent yet. Returns how many notices were queued."""
    level = session.scalar(select(Advisory.level).where(Advisory.id == advisory_id))
    session.execute(
        update(Alert)
        .where(
            Alert.advisory_id == advisory_id,
            Alert.revision < revision,
            Alert.status.in_(states.QUEUED),
        )
        .values(
            status=states.EXPIRED,
            last_error=states.REASON_CANCELLED_BEFORE_SENDING,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        _ENQUEUE,
        {
            "advisory_id": advisory_id,
            "revision": revision,
            "now": now,
            "priority": priority.of_cancellation(level) if level else priority.DEFAULT,
        },
    )
    queued = result.rowcount or 0
    if queued:
        mark_enqueued(session)
    return queued
