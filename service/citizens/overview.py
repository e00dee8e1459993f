"""What consular staff may see of the registry: counts for everyone, masked contacts for consuls."""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from service.citizens.models import Citizen, CitizenPlace
from service.citizens.service import Registry, channels_of, masked_contacts


@dataclass(frozen=True)
class MaskedCitizen:
    id: str
    language: str
    channels: list[str]
    phone: str | None
    email: str | None
    country: str | None


def count_by_country(session: Session) -> dict[str, int]:
    """Active citizens per country of their current location (unknown at sea under '')."""
    query = (
        select(func.coalesce(CitizenPlace.country, ""), func.count())
        .join(Citizen, Citizen.id == CitizenPlace.citizen_id)
        .where(Citizen.status == "active", CitizenPlace.kind == "current")
        .group_by(CitizenPlace.country)
    )
    return {code: count for code, count in session.execute(query)}


def citizens_in_country(
    session: Session, *, registry: Registry, country: str, limit: int, offset: int
) -> tuple[int, list[MaskedCitizen]]:
    """Citizens whose current location is in a country, contacts masked."""
    where = (
        Citizen.status == "active",
        CitizenPlace.kind == "current",
        CitizenPlace.country == country,
    )
    base = select(Citizen).join(CitizenPlace, CitizenPlace.citizen_id == Citizen.id).where(*where)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(
        base.options(selectinload(Citizen.places)).order_by(Citizen.id).limit(limit).offset(offset)
    )
    items = []
    for citizen in rows:
        masked = masked_contacts(registry, citizen)
        items.append(
            MaskedCitizen(
                id=citizen.public_id,
                language=citizen.language,
                channels=channels_of(citizen),
                phone=masked.phone,
                email=masked.email,
                country=country,
            )
        )
    return total, items
