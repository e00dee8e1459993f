"""Data minimisation for what an advisory left behind: a while after it ended, its alert rows
(who was told, where, how), the check-in answers and the answers in force are deleted, the
figures staff saw of them (delivery counts, the roll call's counts) kept on the advisory; and
help messages sent outside a check-in go as long after they came."""

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from service.advisories import deliveries
from service.advisories.models import Advisory
from service.advisories.service import lock_advisory
from service.checkin import rollcall
from service.checkin.models import Checkin, CheckinAnswer, HelpMessage
from service.citizens.service import drop_bare_rows
from service.ledger.models import Alert

log = logging.getLogger(__name__)

# Rows deleted in one run of the hourly job at most: one transaction stays short, and a
# crisis's millions of rows go over a few hours.
ROWS_A_RUN = 200_000


def forget_ended_ledgers(
    session: Session, *, now: datetime, kept_days: int, most_rows: int = ROWS_A_RUN
) -> int:
    """Delete the rows of advisories that ended (expired, or cancelled) over `kept_days` ago,
    oldest first and `most_rows` at most; before an advisory's first row goes, keep its
    figures (Advisory.ledger_kept). One with an alert still open is left as it is: something
    may still send it. Returns how many rows went."""
    cutoff = now - timedelta(days=kept_days)
    left = most_rows
    whose: set[int] = set()  # the citizens of the rows deleted
    candidates = session.scalars(
        select(Advisory)
        .where(
            Advisory.status.in_(("expired", "cancelled")),
            Advisory.ledger_forgotten_at.is_(None),
            _ended_at() < cutoff,
        )
        .order_by(_ended_at(), Advisory.id)
    ).all()
    for advisory in candidates:
        if left <= 0:
            break
        lock_advisory(session, advisory)  # not while a cancel writes its all-clears
        if advisory.status not in ("expired", "cancelled") or advisory.ledger_forgotten_at:
            continue
        if advisory.ledger_kept is None:
            if _still_open(session, advisory.id):
                log.warning(
                    "an ended advisory's alerts are kept: one is still open",
                    extra={"advisory": advisory.public_id},
                )
                continue
            advisory.ledger_kept = {
                "at": now.isoformat(),
                "deliveries": deliveries.figures_to_keep(session, advisory=advisory),
                "roll_call": rollcall.figures_to_keep(session, advisory=advisory, now=now),
            }
            session.flush()
        for table in (Alert, CheckinAnswer, Checkin):
            if left <= 0:
                break
            citizens = _delete_some(session, table, advisory_id=advisory.id, most=left)
            left -= len(citizens)
            whose.update(citizens)
        if left > 0:  # each table had fewer than it was allowed: none is left
            advisory.ledger_forgotten_at = now
    old_help = delete(HelpMessage).where(HelpMessage.received_at < cutoff)
    helped = session.scalars(old_help.returning(HelpMessage.citizen_id)).all()
    # An erased record's bare row was kept for these rows alone: once none is left, it goes.
    drop_bare_rows(session, whose.union(helped))
    return most_rows - left + len(helped)


def _ended_at() -> ColumnElement[datetime]:
    # Cancelled: when. Expired: its end (a proposal that lapsed unapproved has none: when).
    return func.coalesce(Advisory.cancelled_at, Advisory.expires, Advisory.updated_at)


def _still_open(session: Session, advisory_id: int) -> bool:
    query = select(Alert.id).where(Alert.advisory_id == advisory_id, Alert.is_open).limit(1)
    return session.scalar(query) is not None


def _delete_some(
    session: Session,
    table: type[Alert] | type[CheckinAnswer] | type[Checkin],
    *,
    advisory_id: int,
    most: int,
) -> list[int]:
    """Delete `most` rows of the advisory at most; the citizen of each row deleted."""
    # By id (neither backend's DELETE takes a LIMIT by itself).
    some = select(table.id).where(table.advisory_id == advisory_id).limit(most)
    return list(
        session.scalars(
            delete(table)
            .where(table.id.in_(some.scalar_subquery()))
            .returning(table.citizen_id)
            .execution_options(synchronize_session=False)
        )
    )
