"""Cries for help that no check-in asked for (a registered number texting "2 …" before any
advisory reached them, or after one ended), as consuls see them in the console: newest first,
contacts masked, their words only with the audited reveal. The duty staff were told of each
by e-mail or webhook; this is where the rest of the consular staff find them."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.checkin.models import HelpMessage
from service.citizens.models import Citizen, CitizenPlace
from service.citizens.service import Registry, masked_contacts


@dataclass(frozen=True)
class HelpMessageRow:
    id: int
    citizen_id: str
    contact: str | None  # masked
    country: str | None  # of their current place
    channel: str
    received_at: datetime
    duty_notified_at: datetime | None
    sms_opted_out: bool


def recent(
    session: Session, *, registry: Registry, limit: int, offset: int
) -> tuple[int, list[HelpMessageRow]]:
    """Help messages of citizens still registered, newest first: how many, and a page."""
    base = (
        select(HelpMessage, Citizen)
        .join(Citizen, Citizen.id == HelpMessage.citizen_id)
        .where(Citizen.status == "active")
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    found = session.execute(
        base.order_by(HelpMessage.received_at.desc(), HelpMessage.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    countries = {
        citizen_id: country
        for citizen_id, country in session.execute(
            select(CitizenPlace.citizen_id, CitizenPlace.country).where(
                CitizenPlace.citizen_id.in_({citizen.id for _, citizen in found}),
                CitizenPlace.kind == "current",
            )
        )
    }
    rows = []
    for message, citizen in found:
        masked = masked_contacts(registry, citizen)
        rows.append(
            HelpMessageRow(
                id=message.id,
                citizen_id=citizen.public_id,
                contact=masked.phone or masked.email,
                country=countries.get(citizen.id),
                channel=message.channel,
                received_at=message.received_at,
                duty_notified_at=message.duty_notified_at,
                sms_opted_out=citizen.sms_opted_out_at is not None,
            )
        )
    return total, rows
