"""Cries for help that no check-in asked for (a registered number texting "2 …" before any
advisory reached them, or after one ended), as consuls see them in the console: newest first,
contacts masked, their words only with the audited reveal. The duty staff were told of each
by e-mail or webhook; this is where the rest of the consular staff find them."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.checkin.models import HelpMessage
from service.citizens.models import Citizen, CitizenPlace
from service.citizens.service import Registry, masked_contacts


@dataclass(frozen=True)
class HelpMessageRow:
    """One citizen: their latest help message, and how many (one number texting again and
    again is one row, and buries nobody else's)."""

    citizen_id: str
    contact: str | None  # masked
    country: str | None  # of their current place
    received_at: datetime  # the latest
    messages: int
    waiting: int  # not yet in a duty notice
    sms_opted_out: bool


def recent(
    session: Session, *, registry: Registry, limit: int, offset: int
) -> tuple[int, list[HelpMessageRow]]:
    """Citizens still registered who sent help messages, the latest first: how many, and a
    page."""
    total = (
        session.scalar(
            select(func.count(func.distinct(HelpMessage.citizen_id)))
            .join(Citizen, Citizen.id == HelpMessage.citizen_id)
            .where(Citizen.status == "active")
        )
        or 0
    )
    latest = func.max(HelpMessage.received_at)
    grouped = session.execute(
        select(
            HelpMessage.citizen_id,
            latest,
            func.count(),
            func.sum(case((HelpMessage.duty_notified_at.is_(None), 1), else_=0)),
        )
        .join(Citizen, Citizen.id == HelpMessage.citizen_id)
        .where(Citizen.status == "active")
        .group_by(HelpMessage.citizen_id)
        .order_by(latest.desc(), HelpMessage.citizen_id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    ids = [citizen_id for citizen_id, _, _, _ in grouped]
    citizens = {c.id: c for c in session.scalars(select(Citizen).where(Citizen.id.in_(ids)))}
    countries = {
        citizen_id: country
        for citizen_id, country in session.execute(
            select(CitizenPlace.citizen_id, CitizenPlace.country).where(
                CitizenPlace.citizen_id.in_(ids), CitizenPlace.kind == "current"
            )
        )
    }
    rows = []
    for citizen_id, received_at, messages, waiting in grouped:
        citizen = citizens[citizen_id]
        masked = masked_contacts(registry, citizen)
        rows.append(
            HelpMessageRow(
                citizen_id=citizen.public_id,
                contact=masked.first_readable,
                country=countries.get(citizen_id),
                received_at=received_at,
                messages=messages,
                waiting=waiting or 0,
                sms_opted_out=citizen.sms_opted_out_at is not None,
            )
        )
    return total, rows
