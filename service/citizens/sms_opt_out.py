"""STOP and START: whether we may text a number at all. The provider enforces them in the US
and Canada (a STOPped number's texts fail with Twilio 21610); we keep the same answer per
number, whichever record holds it, so that nothing is sent that would be refused and staff see
who cannot get SMS. The citizen row carries a copy (`sms_opted_out_at`) for the send path."""

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.citizens.models import Citizen, SmsOptOut


def stopped_at(session: Session, phone_hash: str) -> datetime | None:
    """When the number said STOP (None: it may be texted)."""
    return session.scalar(select(SmsOptOut.opted_out_at).where(SmsOptOut.phone_hash == phone_hash))


def hear_opt_out(session: Session, *, phone_hash: str, stop: bool, now: datetime) -> None:
    """The number said STOP (`stop`) or START: kept for the number, and copied onto every
    record that holds it (pending ones too), also when none does yet."""
    if stop:
        try:
            with session.begin_nested():
                session.add(SmsOptOut(phone_hash=phone_hash, opted_out_at=now))
                session.flush()
        except IntegrityError:
            pass  # said STOP before: the first one stands
    else:
        session.execute(
            delete(SmsOptOut)
            .where(SmsOptOut.phone_hash == phone_hash)
            .execution_options(synchronize_session=False)
        )
    session.execute(
        update(Citizen)
        .where(Citizen.phone_hash == phone_hash)
        .values(sms_opted_out_at=stopped_at(session, phone_hash))
        .execution_options(synchronize_session="fetch")
    )
