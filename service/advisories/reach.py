"""Whom an advisory reaches, computed live from the registry with the matching engine (for
preview and the matches listing; the ledger records who was actually enqueued)."""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.citizens.models import Citizen
from service.citizens.service import Registry, channels_of, masked_contacts
from service.geo import matching
from service.geo.areas import Area
from service.geomatch.places import load_reachable


@dataclass(frozen=True)
class Reach:
    citizen_ids: np.ndarray  # internal ids, sorted
    by_channel: dict[str, int]
    at_current: frozenset[int]  # of those, reached where they are now (the rest: by a stay)


def compute_reach(
    session: Session, *, area: Area, effective: datetime, expires: datetime | None, now: datetime
) -> Reach:
    reachable = load_reachable(session.connection(), today=now.date())
    target = matching.Target.for_window(0, area, effective=effective, expires=expires, now=now)
    today = matching.day_number(now.date())
    ids = matching.match(target, reachable.places, today=today)
    sms, email = reachable.channels_of(ids)
    hits = matching.place_hits(area, reachable.places)
    current = (
        hits[reachable.places.starts[hits] == matching.CURRENT] if target.active_now else hits[:0]
    )
    return Reach(
        citizen_ids=ids,
        by_channel={"sms": len(sms), "email": len(email)},
        at_current=frozenset(reachable.places.citizen_ids[current].tolist()),
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
        masked = masked_contacts(registry, citizen)
        current = next((p for p in citizen.places if p.kind == "current"), None)
        page.append(
            MatchedCitizen(
                citizen_id=citizen.public_id,
                language=citizen.language,
                channels=channels_of(citizen),
                phone=masked.phone,
                email=masked.email,
                place="current" if citizen.id in reach.at_current else "stay",
                country=current.country if current else None,
            )
        )
    return page
