"""STOP and START: whether we may text a number at all. The provider enforces them in the US
and Canada (a STOPped number's texts fail with Twilio 21610); we keep the same answer per
number, whichever record holds it, so that nothing is sent that would be refused and staff see
who cannot get SMS. The citizen row carries a copy (`sms_opted_out_at`) for the send path."""

from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.citizens.models import Citizen, SmsOptOut


def stopped_at(session: Session, phone_hash: str) -> datetime | None:
    """When the number said STOP (None: it may be texted)."""
    return session.scalar(select(SmsOptOut.opted_out_at).where(SmsOptOut.phone_hash == phone_hash))


def hear_opt_out(
    session: Session,
    *,
    phone_hash: str,
    stop: bool,
    now: datetime,
    refused_since: datetime | None = None,
) -> None:
    """The number said STOP (`stop`) or START: kept on the number's one row, and copied onto
    the record that holds it (if any; one waiting for its code reads the row when verified).
    The row is locked first, so a STOP and a START at once end with the row and the copy
    agreeing on the later one. `refused_since`: the STOP is a provider's refusal of a send
    begun then (Twilio 21610), not the number's own word: a START heard since stands (a
    review: the refusal was written up to half a second later and undid such a START)."""
    row = _locked(session, phone_hash)
    if (
        refused_since is not None
        and row is not None
        and row.opted_out_at is None
        and row.changed_at is not None
        and row.changed_at > refused_since
    ):
        return
    if row is None:
        try:
            with session.begin_nested():
                session.add(SmsOptOut(phone_hash=phone_hash, opted_out_at=None))
                session.flush()
        except IntegrityError:
            pass  # made at the same moment by another message from the number
        row = _locked(session, phone_hash)
        assert row is not None
    if not stop:
        row.opted_out_at = None
    elif row.opted_out_at is None:
        row.opted_out_at = now  # said STOP before: the first one stands
    if refused_since is None:
        # On the database's clock, as the dispatcher reads the send's start: a process whose
        # own clock is slow would otherwise date a START before the refusal it follows.
        row.changed_at = database_now(session, now)
    session.flush()
    session.execute(
        update(Citizen)
        .where(Citizen.phone_hash == phone_hash)
        .values(sms_opted_out_at=row.opted_out_at)
        .execution_options(synchronize_session="fetch")
    )


def _locked(session: Session, phone_hash: str) -> SmsOptOut | None:
    return session.scalar(
        select(SmsOptOut)
        .where(SmsOptOut.phone_hash == phone_hash)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def database_now(session: Session, now: datetime) -> datetime:
    """Now on the clock the START dates its change by (PostgreSQL's), else `now`: what a
    refusal's `refused_since` must be read on."""
    if session.get_bind().dialect.name != "postgresql":
        return now  # SQLite: this machine's clock, the only one
    return session.scalar(text("SELECT clock_timestamp()"))  # type: ignore[return-value]
