"""A stay's dates are its traveller's own calendar, which runs from UTC-12 to UTC+14. At 03:00
UTC it is still yesterday evening in Los Angeles: someone there on the last day of their stay
must still be reached, on every matching path and both backends (before, the stay counted as
over at midnight UTC, and they were missed for up to twelve hours). A stay has begun (there,
asked whether safe) from midnight of its first day on its country's clock (before, by UTC
everywhere: in Asia up to half a day late)."""

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from service.advisories.reach import compute_reach
from service.citizens.models import Citizen, CitizenPlace
from service.geo import clocks, countries, matching
from service.geo.areas import area_from_json
from service.geomatch.service import POSTGIS_AT_MOST, Sweeper, match_advisories, match_citizen
from service.ledger.models import Ahead, Alert
from tests.builders import citizen_body
from tests.geomatch.builders import TODAY, advisory, citizen, with_revision

# 03:00 UTC: 19:00 the day before in Los Angeles, noon in Tokyo.
AT = datetime.combine(TODAY + timedelta(days=3), time(3), tzinfo=UTC)
LOCAL_YESTERDAY = AT.date() - timedelta(days=1)  # still today in Los Angeles
LOS_ANGELES = (-118.24, 34.05)
TOKYO = (139.69, 35.68)
SEOUL = (126.98, 37.57)
PARIS = (2.35, 48.86)
APIA = (-171.76, -13.83)
REUNION = (55.45, -20.88)
BRUSSELS = (4.35, 50.85)
SEOUL_TIME = timezone(timedelta(hours=9))


def _circle(lon_lat: tuple[float, float]) -> dict:
    return {"circles": [{"lat": lon_lat[1], "lon": lon_lat[0], "radius_km": 50}]}


def _traveller(db, where: tuple[float, float], first, last) -> int:
    """A citizen at home in Seoul with one stay at `where` (and its country, as registration
    finds it)."""
    country = countries.boundaries().code_at(*where)
    return citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[(*where, country, first, last)]).id


def _in_los_angeles(db) -> dict[str, int]:
    return {
        "last_day_there": _traveller(
            db, LOS_ANGELES, AT.date() - timedelta(days=5), LOCAL_YESTERDAY
        ),
        "left_a_day_before": _traveller(
            db, LOS_ANGELES, AT.date() - timedelta(days=5), AT.date() - timedelta(days=2)
        ),
    }


def _told(db, record) -> dict[int, Ahead]:
    db.expire_all()
    rows = db.execute(
        select(Alert.citizen_id, Alert.told_ahead).where(
            Alert.advisory_id == record.id, Alert.checkin_round == 0
        )
    )
    return dict(rows.all())


def test_a_new_advisory_reaches_the_last_evening_of_a_stay_after_midnight_utc(db):
    people = _in_los_angeles(db)
    record = advisory(db, area=_circle(LOS_ANGELES), effective=AT - timedelta(hours=1))
    match_advisories(db, advisories=[record], now=AT)
    # Still there, so told as one who is there (asked, not told ahead).
    assert _told(db, record) == {people["last_day_there"]: Ahead.NO}


@pytest.mark.parametrize("written_in", [UTC, SEOUL_TIME], ids=["UTC", "+09:00"])
def test_an_advisory_that_begins_after_midnight_utc_reaches_that_evening(db, written_in):
    """Its first day, as a stay's dates read it, is the earliest date anywhere when it begins,
    however the time is written (staff may send 13:30+09:00: the same instant as 04:30Z)."""
    people = _in_los_angeles(db)
    effective = (AT + timedelta(minutes=30)).astimezone(written_in)
    record = advisory(db, area=_circle(LOS_ANGELES), effective=effective)
    match_advisories(db, advisories=[record], now=AT)
    assert set(_told(db, record)) == {people["last_day_there"]}


@pytest.mark.parametrize(
    ("ends_at", "reached"), [(time(20), True), (time(10), False)], ids=["20:00Z", "10:00Z"]
)
def test_an_advisory_reaches_a_stay_that_begins_where_its_last_day_has_already_come(
    db, ends_at, reached
):
    """Ending at 20:00 UTC, it is 05:00 the next morning in Tokyo, so a stay there beginning on
    that next day overlaps it by five hours; one beginning the day after does not. Ending at
    10:00 UTC sharp, the next day has begun nowhere while it is in effect (its end is
    exclusive): that stay is not reached."""
    expires = datetime.combine(AT.date() + timedelta(days=1), ends_at, tzinfo=UTC)
    next_morning = expires.date() + timedelta(days=1)
    arrives_then = _traveller(db, TOKYO, next_morning, next_morning + timedelta(days=4))
    _traveller(db, TOKYO, next_morning + timedelta(days=1), next_morning + timedelta(days=4))
    record = advisory(db, area=_circle(TOKYO), effective=AT - timedelta(hours=1), expires=expires)
    match_advisories(db, advisories=[record], now=AT)
    assert _told(db, record) == ({arrives_then: Ahead.WAITING} if reached else {})


def _match_by(path: str, db, record, people: list[int], now: datetime) -> None:
    if path == "new advisory":
        match_advisories(db, advisories=[record], now=now)
    elif path == "new citizen":
        for person in people:
            match_citizen(db, citizen_id=person, now=now)
    else:
        factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
        if path == "sweep by shards":  # more advisories than PostGIS takes at once
            for _ in range(POSTGIS_AT_MOST):
                advisory(db, area=_circle(SEOUL), effective=now - timedelta(hours=1))
        Sweeper(shard_citizens=2).run(factory, now=now)


# (now, where, first day of the stay, there), on the country's clock where it keeps one:
# - 20:00 UTC is 05:00 the next morning in Tokyo: by the UTC date the traveller who had landed
#   there was not there yet; 21:00 in Paris is not.
# - 23:30 UTC is 00:30 the next morning in Brussels (UTC+1 in winter, +2 in summer), though
#   23:47 by the sun.
# - 12:00 UTC is 01:00 the next morning in Apia (UTC+13), though 00:33 that same day by the sun
#   and noon by UTC: a whole day either way.
# - Réunion is France's by its outline but keeps UTC+4, not Paris' UTC+1: France is not one
#   clock, and 20:30 UTC, 00:18 the next morning there by the sun (00:30 by law), has begun it.
# - The United States keep several clocks: west of Greenwich that is midnight UTC (at 03:00
#   UTC, 19:00 the evening before in Los Angeles, a stay beginning that day has begun).
_BEGUN = [
    (time(20), TOKYO, 1, Ahead.NO),
    (time(20), TOKYO, 2, Ahead.WAITING),
    (time(20), PARIS, 1, Ahead.WAITING),
    (time(23, 30), BRUSSELS, 1, Ahead.NO),
    (time(12), APIA, 1, Ahead.NO),
    (time(10), APIA, 1, Ahead.WAITING),
    (time(20, 30), REUNION, 1, Ahead.NO),
    (time(3), LOS_ANGELES, 0, Ahead.NO),
    (time(3), LOS_ANGELES, 1, Ahead.WAITING),
]


@pytest.mark.parametrize("path", ["new advisory", "new citizen", "sweep", "sweep by shards"])
def test_a_stay_begins_at_midnight_of_its_first_day_where_it_is(db, path):
    """There (asked whether safe) or told ahead, by the local day at the stay's longitude."""
    for at, where, first, there in _BEGUN:
        now = datetime.combine(AT.date(), at, tzinfo=UTC)
        start = now.date() + timedelta(days=first)
        person = _traveller(db, where, start, start + timedelta(days=4))
        record = advisory(db, area=_circle(where), effective=now - timedelta(hours=1))
        _match_by(path, db, record, [person], now)
        assert _told(db, record).get(person) == there, (at, where, first)


def test_a_traveller_told_ahead_is_asked_from_midnight_where_the_stay_is(db):
    """Told at 10:00 UTC, 19:00 the evening before in Tokyo; asked by the sweep once its first
    day has begun there (15:00 UTC), not before and not at midnight UTC."""
    told_at = AT.replace(hour=10)
    first = told_at.date() + timedelta(days=1)
    person = _traveller(db, TOKYO, first, first + timedelta(days=3))
    record = with_revision(
        db, area=_circle(TOKYO), effective=told_at - timedelta(hours=1), level="4"
    )
    match_advisories(db, advisories=[record], now=told_at)
    assert _told(db, record) == {person: Ahead.WAITING}
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    sweeper = Sweeper(shard_citizens=2)
    assert sweeper.run(factory, now=told_at.replace(hour=14, minute=55)).asked_on_arrival == 0
    assert sweeper.run(factory, now=told_at.replace(hour=15, minute=5)).asked_on_arrival == 1


def test_a_citizen_who_registers_on_the_last_evening_is_reached(db):
    record = advisory(db, area=_circle(LOS_ANGELES), effective=AT - timedelta(hours=1))
    people = _in_los_angeles(db)
    for person in people.values():
        match_citizen(db, citizen_id=person, now=AT)
    assert set(_told(db, record)) == {people["last_day_there"]}


@pytest.mark.parametrize("advisories", [1, POSTGIS_AT_MOST + 1], ids=["few", "many"])
def test_the_sweep_reaches_the_last_evening_by_postgis_and_by_shards(db, advisories):
    people = _in_los_angeles(db)
    records = [
        advisory(db, area=_circle(LOS_ANGELES), effective=AT - timedelta(hours=1))
        for _ in range(advisories)
    ]
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    Sweeper(shard_citizens=2).run(factory, now=AT)
    for record in records:
        assert set(_told(db, record)) == {people["last_day_there"]}


def test_the_sweep_of_citizens_changed_since_reaches_the_last_evening(db):
    """The steady sweep reads only citizens changed since its last run."""
    record = advisory(db, area=_circle(LOS_ANGELES), effective=AT - timedelta(hours=2))
    sweeper = Sweeper(shard_citizens=2)
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    sweeper.run(factory, now=AT - timedelta(hours=1))  # everyone (nobody yet)
    people = _in_los_angeles(db)
    db.execute(update(Citizen).where(Citizen.id.in_(people.values())).values(updated_at=AT))
    sweeper.run(factory, now=AT)
    assert set(_told(db, record)) == {people["last_day_there"]}


def test_a_traveller_told_ahead_is_asked_on_the_last_evening_of_a_one_day_stay(db):
    """Told two days ahead of a one-day stay in Los Angeles; at 03:00 UTC the next day (UTC) it
    is still that day there: the sweep asks them whether they are safe."""
    arrived = _traveller(db, LOS_ANGELES, LOCAL_YESTERDAY, LOCAL_YESTERDAY)
    record = with_revision(
        db, area=_circle(LOS_ANGELES), effective=AT - timedelta(days=3), level="4"
    )
    match_advisories(db, advisories=[record], now=AT - timedelta(days=2))
    assert _told(db, record) == {arrived: Ahead.WAITING}
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    assert Sweeper(shard_citizens=2).run(factory, now=AT).asked_on_arrival == 1


def test_the_preview_counts_the_last_evening(db):
    people = _in_los_angeles(db)
    found = compute_reach(
        db,
        area=area_from_json(_circle(LOS_ANGELES)),
        effective=AT - timedelta(hours=1),
        expires=AT + timedelta(days=2),
        now=AT,
    )
    assert found.citizen_ids.tolist() == [people["last_day_there"]]


@pytest.mark.parametrize(
    ("ends", "accepted"),
    [(LOCAL_YESTERDAY, True), (LOCAL_YESTERDAY - timedelta(days=1), False)],
    ids=["ends today in Los Angeles", "ended everywhere"],
)
def test_registration_takes_a_stay_that_ends_today_somewhere(
    client, db, monkeypatch, ends, accepted
):
    monkeypatch.setattr("service.citizens.service.utcnow", lambda: AT)
    stay = {
        "lat": LOS_ANGELES[1],
        "lon": LOS_ANGELES[0],
        "from": (ends - timedelta(days=3)).isoformat(),
        "to": ends.isoformat(),
    }
    response = client.post("/v1/citizens", json=citizen_body(stays=[stay]))
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["stays[0].to"]
    stored = select(func.count()).where(CitizenPlace.kind == "stay", CitizenPlace.ends_on == ends)
    assert db.scalar(stored) == int(accepted)


def test_dates_of_times_that_leave_the_calendar_in_utc_are_clamped():
    """The API refuses such a time (tests/advisories/test_bad_input.py); a feed's or a stored
    one still gets a date, not an OverflowError."""
    before_year_1 = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    after_9999 = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-12)))
    assert matching.earliest_date(before_year_1) == matching.latest_date(before_year_1) == date.min
    assert matching.earliest_date(after_9999) == matching.latest_date(after_9999) == date.max


def test_countries_of_one_clock_are_those_whose_every_part_keeps_it():
    """Read from the tz database and from the zone at each sizeable part of the outline."""
    offsets = clocks.one_clock_offsets(datetime(2026, 12, 5, 12, tzinfo=UTC))
    assert (offsets["JP"], offsets["KR"], offsets["WS"]) == (9 * 3600, 9 * 3600, 13 * 3600)
    assert offsets["BE"] == 3600
    # Several clocks: by the tz database (US, RU, AU; CN with Xinjiang's), or by parts of
    # the outline (France's Réunion and Antilles, the Netherlands' Bonaire).
    assert not {"US", "RU", "AU", "CN", "FR", "NL"} & set(offsets)
