"""Data minimisation: stays are deleted a while after they end."""

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.citizens.models import CitizenPlace
from service.geo.matching import earliest_date


def purge_ended_stays(session: Session, *, now: datetime, retention_days: int) -> int:
    """Delete stays that ended more than retention_days ago, everywhere (a stay's dates are
    its traveller's calendar: one that ended yesterday in UTC may still be on in Los Angeles,
    and matched); returns how many."""
    cutoff = earliest_date(now) - timedelta(days=retention_days)
    result = session.execute(
        delete(CitizenPlace).where(CitizenPlace.kind == "stay", CitizenPlace.ends_on < cutoff)
    )
    return result.rowcount or 0
