"""Cancellation notices: an advisory's all-clear goes to whoever may have been told of it."""

from datetime import datetime

from sqlalchemy import bindparam, text, update
from sqlalchemy.orm import Session

from service.db import UTCDateTime
from service.dispatch.models import Alert
from service.dispatch.wake import mark_enqueued

# Rows claimed, sent or delivered may have reached the citizen; an all-clear goes to each.
_ENQUEUE = text(
    "INSERT INTO alert (advisory_id, revision, citizen_id, channel, status, created_at) "
    "SELECT DISTINCT advisory_id, :revision, citizen_id, channel, 'pending', :now FROM alert "
    "WHERE advisory_id = :advisory_id AND revision < :revision "
    "AND status IN ('claimed', 'sent', 'delivered') "
    "ON CONFLICT (advisory_id, revision, citizen_id, channel) DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))


def enqueue_cancellation(
    session: Session, *, advisory_id: int, revision: int, now: datetime
) -> int:
    """Queue the cancellation (revision `revision`) to everyone told of an earlier revision, and
    stop what was not sent yet. Returns how many notices were queued."""
    session.execute(
        update(Alert)
        .where(
            Alert.advisory_id == advisory_id,
            Alert.revision < revision,
            Alert.status.in_(("pending", "retry_wait")),
        )
        .values(status="expired", last_error="advisory cancelled before sending", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        _ENQUEUE, {"advisory_id": advisory_id, "revision": revision, "now": now}
    )
    queued = result.rowcount or 0
    if queued:
        mark_enqueued(session)
    return queued
