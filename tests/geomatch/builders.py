"""Direct builders for geomatching tests: places and advisories written through the models."""

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory, AdvisoryRevision
from service.citizens.models import Citizen, CitizenPlace
from service.geo import countries
from service.ledger.models import Alert

_n = itertools.count(1)
NOW = datetime.now(UTC)
TODAY = NOW.date()


def citizen(
    db: Session,
    *,
    lon: float | None = None,
    lat: float | None = None,
    country: str | None = None,
    stays: list[tuple[float | None, float | None, str | None, date, date]] = (),
    channels: tuple[str, ...] = ("sms",),
) -> Citizen:
    """A citizen with a current place (a point, its country looked up; or a country) and stays."""
    person = Citizen(
        public_id=str(uuid.uuid4()),
        language="ko",
        notify_sms="sms" in channels,
        notify_email="email" in channels,
    )
    if lon is not None:
        country = countries.boundaries().code_at(lon, lat)
    places = [
        CitizenPlace(
            kind="current",
            source="point" if lon is not None else "country",
            lon=lon,
            lat=lat,
            country=country,
        )
    ]
    for s_lon, s_lat, s_country, start, end in stays:
        places.append(
            CitizenPlace(
                kind="stay",
                source="point" if s_lon is not None else "country",
                lon=s_lon,
                lat=s_lat,
                country=s_country,
                starts_on=start,
                ends_on=end,
            )
        )
    person.places = places
    db.add(person)
    db.flush()
    return person


def advisory(
    db: Session,
    *,
    area: dict,
    effective: datetime | None = None,
    expires: datetime | None = None,
    alerts_citizens: bool = True,
    level: str = "2",
) -> Advisory:
    record = Advisory(
        public_id=str(uuid.uuid4()),
        revision=1,
        status="active",
        source="manual",
        issued_by="test",
        alerts_citizens=alerts_citizens,
        level=level,
        category="security",
        title_en=f"test {next(_n)}",
        message_en="m",
        area={
            "countries": [],
            "subdivisions": [],
            "geometry": None,
            "circles": [],
            "zones": [],
            "description": "",
            "notes": [],
            **area,
        },
        effective=effective or NOW - timedelta(hours=1),
        expires=expires if expires is not None else NOW + timedelta(days=10),
    )
    db.add(record)
    db.flush()
    return record


def with_revision(db: Session, **fields) -> Advisory:
    """advisory(), with its revision's content, which says whether it asks "are you safe?"."""
    record = advisory(db, **fields)
    db.add(
        AdvisoryRevision(
            advisory_id=record.id,
            revision=record.revision,
            content={"level": record.level},
            changed_by="test",
            change="created",
        )
    )
    db.flush()
    return record


def alerted(db: Session, record: Advisory) -> set[int]:
    """Citizen ids with an alert row for the advisory's current revision."""
    rows = db.scalars(
        select(Alert.citizen_id).where(
            Alert.advisory_id == record.id, Alert.revision == record.revision
        )
    )
    return set(rows)
