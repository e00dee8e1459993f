"""Data minimisation: stays are deleted a while after they end."""

from datetime import date, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.citizens.models import CitizenPlace


def purge_ended_stays(session: Session, *, today: date, retention_days: int) -> int:
    """Delete stays that ended more than retention_days ago; returns how many."""
    cutoff = today - timedelta(days=retention_days)
    result = session.execute(
        delete(CitizenPlace).where(CitizenPlace.kind == "stay", CitizenPlace.ends_on < cutoff)
    )
    return result.rowcount or 0
