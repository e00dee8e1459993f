"""A lease row elects the one process that runs each singleton job. APScheduler 3 runs every job
in every worker process (agronholm/apscheduler #160, #655, #766); without this, N workers
would sweep N times (harmless for the ledger, but N times the work)."""

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import String, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.db import Base, UTCDateTime, bound_idle


class SchedulerLease(Base):
    """Which process runs a singleton job until when (the sweep, expiry, purges, feed polls)."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(
    session: Session, *, name: str, now: datetime, ttl: timedelta, holder: str = PROCESS_ID
) -> bool:
    """Take or renew the lease; False while another live holder has it."""
    renewed = session.execute(
        update(SchedulerLease)
        .where(
            SchedulerLease.name == name,
            (SchedulerLease.holder == holder) | (SchedulerLease.expires_at < now),
        )
        .values(holder=holder, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount:
        return True
    try:
        with session.begin_nested():
            session.add(SchedulerLease(name=name, holder=holder, expires_at=now + ttl))
    except IntegrityError:
        return False  # someone else holds it and it has not lapsed
    return True


def fence(session: Session, *, ttl: timedelta) -> None:
    """Bound how long this job's transaction may sit idle on PostgreSQL: a holder paused past
    its lease (SIGSTOP, a stalled VM) has its transaction ended by the server, and the row
    locks it held go to its successor instead of blocking it."""
    bound_idle(session, seconds=ttl.total_seconds())


def still_held(session: Session, *, name: str, holder: str = PROCESS_ID) -> bool:
    """At the end of a job's transaction, before it commits: the lease is still this
    holder's. The row stays locked until the commit, so a successor cannot take it in between;
    a holder that lost it rolls back instead of committing over its successor's run."""
    current = session.scalar(
        select(SchedulerLease.holder).where(SchedulerLease.name == name).with_for_update()
    )
    return current == holder


def release_held(session: Session, *, holder: str = PROCESS_ID) -> list[str]:
    """Give up every lease `holder` has (a clean stop, its jobs finished): the next process
    takes the jobs at once instead of after their leases lapse (three of their intervals; a
    newcomer's restart ran no sweep, expiry or duty notice for three minutes)."""
    return list(
        session.scalars(
            delete(SchedulerLease)
            .where(SchedulerLease.holder == holder)
            .returning(SchedulerLease.name)
        )
    )
