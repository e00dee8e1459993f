"""Whom an advisory reaches, computed live from the registry with the matching engine (for
preview and the matches listing; the ledger records who was actually enqueued)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.advisories.drafts import AdvisoryDraft
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
    # The place that reached each citizen (their current location first, else their first
    # matching stay), as an index into `places`.
    place_of: dict[int, int] = field(default_factory=dict)
    places: matching.PlaceSet | None = None


_ONE_READ = "anjeon.reach.one_read"  # session.info: the registry read once per moment matched


@contextmanager
def one_registry_read(session: Session) -> Iterator[None]:
    """Within, the reaches computed in `session` read the registry once, not once each: for
    an import, whose items each ask whether they must wait for a second person (a review: a
    6 KB document of 30 small sea quakes read 200,000 citizens' places 30 times, 42 CPU
    seconds, holding SQLite's one write lock). Only for work that changes no citizen."""
    session.info[_ONE_READ] = {}
    try:
        yield
    finally:
        session.info.pop(_ONE_READ, None)


def compute_reach(
    session: Session,
    *,
    area: Area,
    effective: datetime,
    expires: datetime | None,
    now: datetime,
    exercise: bool = False,
) -> Reach:
    """Whom the area reaches in its window now; a drill (`exercise`) only those opted in."""
    today = matching.Today.at(now)
    read = session.info.get(_ONE_READ)
    if read is None:
        reachable = load_reachable(session.connection(), today=today)
    else:
        if today not in read:
            read[today] = load_reachable(session.connection(), today=today)
        reachable = read[today]
    target = matching.Target.for_window(0, area, effective=effective, expires=expires, now=now)
    hits = matching.matched_places(target, reachable.places, today=today)
    ids = matching.sorted_unique(reachable.places.citizen_ids[hits])
    # Only active citizens, on the channels they are alerted on, count.
    ids = ids[np.isin(ids, reachable.citizen_ids, assume_unique=True)]
    if exercise:
        ids = reachable.opted_in(ids)
    sms, email = reachable.channels_of(ids)
    places = reachable.places
    place_of: dict[int, int] = {}
    # Current locations sort first (CURRENT is the smallest start), then stays by start.
    for index in hits[np.lexsort((places.starts[hits], places.citizen_ids[hits]))].tolist():
        place_of.setdefault(int(places.citizen_ids[index]), index)
    return Reach(
        citizen_ids=ids,
        by_channel={"sms": len(sms), "email": len(email)},
        at_current=frozenset(
            cid for cid, index in place_of.items() if places.starts[index] == matching.CURRENT
        ),
        place_of=place_of,
        places=places,
    )


def reach_of_draft(session: Session, draft: AdvisoryDraft, *, now: datetime) -> Reach:
    """Whom this content reaches now: its reach area, its window, drills only to those who opted
    in. One spelling for the matches listing, roll calls and reach_once_in_effect."""
    return compute_reach(
        session,
        area=draft.reach_area(),
        effective=draft.effective,
        expires=draft.expires,
        now=now,
        exercise=draft.exercise,
    )


def reach_once_in_effect(session: Session, draft: AdvisoryDraft, *, now: datetime) -> Reach:
    """Whom this content will have reached once in effect: now, or when it takes effect. The
    preview and the approval rule count this; counted now, an advisory taking effect in two
    minutes reached no current location, and a probe sent a country-wide one on one key."""
    return reach_of_draft(session, draft, now=max(now, draft.effective))


@dataclass(frozen=True)
class MatchedPlace:
    kind: str  # "current" | "stay"
    country: str | None
    lat: float | None  # rounded to 0.01° (about 1 km): where, not the exact address
    lon: float | None
    starts_on: date | None  # a stay's dates
    ends_on: date | None


@dataclass(frozen=True)
class MatchedCitizen:
    citizen_id: str
    language: str
    channels: list[str]
    phone: str | None
    email: str | None
    place: str
    country: str | None
    matched: MatchedPlace | None


def matched_page(
    session: Session, *, registry: Registry, reach: Reach, limit: int, offset: int
) -> list[MatchedCitizen]:
    """One page of reached citizens, contacts masked, each with the place that matched."""
    ids = [int(i) for i in reach.citizen_ids[offset : offset + limit]]
    citizens = session.scalars(select(Citizen).where(Citizen.id.in_(ids)).order_by(Citizen.id))
    page = []
    for citizen in citizens:
        masked = masked_contacts(registry, citizen)
        where = _place(reach, citizen.id)
        page.append(
            MatchedCitizen(
                citizen_id=citizen.public_id,
                language=citizen.language,
                channels=channels_of(citizen),
                phone=masked.phone,
                email=masked.email,
                place=where.kind if where else "current",
                country=where.country if where else None,
                matched=where,
            )
        )
    return page


def _place(reach: Reach, citizen_id: int) -> MatchedPlace | None:
    index = reach.place_of.get(citizen_id)
    places = reach.places
    if index is None or places is None:
        return None
    current = places.starts[index] == matching.CURRENT
    lat, lon = float(places.lats[index]), float(places.lons[index])
    point = not np.isnan(lat)
    return MatchedPlace(
        kind="current" if current else "stay",
        country=str(places.countries[index]) or None,
        lat=round(lat, 2) if point else None,
        lon=round(lon, 2) if point else None,
        starts_on=None if current else matching.day_of(int(places.starts[index])),
        ends_on=None if current else matching.day_of(int(places.ends[index])),
    )
