"""Whom an advisory reaches, computed live from the registry with the matching engine.

Places in reach: every current location, and each stay that has not ended and whose dates
overlap the advisory's active window (DESIGN.md §5)."""

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from service.citizens import contact
from service.citizens.models import Citizen, CitizenPlace
from service.citizens.service import Registry, channels_of, read_contacts
from service.geo import matching
from service.geo.areas import Area


@dataclass(frozen=True)
class Reach:
    citizen_ids: np.ndarray  # internal ids, sorted
    by_channel: dict[str, int]
    places: dict[int, str]  # citizen id -> 'current' or 'stay' (current wins)


def compute_reach(
    session: Session, *, area: Area, effective: datetime, expires: datetime | None, today: date
) -> Reach:
    stay_in_window = and_(
        CitizenPlace.kind == "stay",
        CitizenPlace.ends_on >= max(today, effective.date()),
    )
    if expires is not None:
        stay_in_window = and_(stay_in_window, CitizenPlace.starts_on <= expires.date())
    rows = session.execute(
        select(
            Citizen.id,
            CitizenPlace.kind,
            CitizenPlace.lon,
            CitizenPlace.lat,
            CitizenPlace.country,
            Citizen.notify_sms,
            Citizen.notify_email,
        )
        .join(CitizenPlace, CitizenPlace.citizen_id == Citizen.id)
        .where(Citizen.status == "active", or_(CitizenPlace.kind == "current", stay_in_window))
    ).all()
    places = matching.Places.of([(r.lon, r.lat, r.country) for r in rows])
    mask = matching.affected(area, places)
    hit_places: dict[int, str] = {}
    channels: dict[int, tuple[bool, bool]] = {}
    for row in (rows[i] for i in np.flatnonzero(mask)):
        if hit_places.get(row.id) != "current":
            hit_places[row.id] = row.kind
        channels[row.id] = (row.notify_sms, row.notify_email)
    ids = np.array(sorted(hit_places), dtype=np.int64)
    return Reach(
        citizen_ids=ids,
        by_channel={
            "sms": sum(1 for sms, _ in channels.values() if sms),
            "email": sum(1 for _, email in channels.values() if email),
        },
        places=hit_places,
    )


@dataclass(frozen=True)
class MatchedCitizen:
    citizen_id: str
    language: str
    channels: list[str]
    phone: str | None
    email: str | None
    place: str
    country: str | None


def matched_page(
    session: Session, *, registry: Registry, reach: Reach, limit: int, offset: int
) -> list[MatchedCitizen]:
    """One page of reached citizens, contacts masked."""
    ids = [int(i) for i in reach.citizen_ids[offset : offset + limit]]
    citizens = session.scalars(select(Citizen).where(Citizen.id.in_(ids)).order_by(Citizen.id))
    page = []
    for citizen in citizens:
        found = read_contacts(registry, citizen)
        current = next((p for p in citizen.places if p.kind == "current"), None)
        page.append(
            MatchedCitizen(
                citizen_id=citizen.public_id,
                language=citizen.language,
                channels=channels_of(citizen),
                phone=contact.mask_phone(found.phone) if found.phone else None,
                email=contact.mask_email(found.email) if found.email else None,
                place=reach.places[citizen.id],
                country=current.country if current else None,
            )
        )
    return page
