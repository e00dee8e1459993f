"""A stay's dates are its traveller's own calendar, which runs from UTC-12 to UTC+14. At 03:00
UTC it is still yesterday evening in Los Angeles: someone there on the last day of their stay
must still be reached, on every matching path and both backends (before, the stay counted as
over at midnight UTC, and they were missed for up to twelve hours). A stay counts as begun
(there, asked whether safe) from its first day in UTC, as before."""

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from service.citizens.models import CitizenPlace
from service.geomatch.service import POSTGIS_AT_MOST, Sweeper, match_advisories, match_citizen
from service.ledger.models import Ahead, Alert
from tests.builders import citizen_body
from tests.geomatch.builders import TODAY, advisory, citizen

# 03:00 UTC: 19:00 the day before in Los Angeles, noon in Tokyo.
AT = datetime.combine(TODAY + timedelta(days=3), time(3), tzinfo=UTC)
LOCAL_YESTERDAY = AT.date() - timedelta(days=1)  # still today in Los Angeles
LOS_ANGELES = (-118.24, 34.05)
TOKYO = (139.69, 35.68)
SEOUL = (126.98, 37.57)


def _circle(lon_lat: tuple[float, float]) -> dict:
    return {"circles": [{"lat": lon_lat[1], "lon": lon_lat[0], "radius_km": 50}]}


def _traveller(db, where: tuple[float, float], first, last) -> int:
    """A citizen at home in Seoul with one stay at `where`."""
    return citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[(*where, None, first, last)]).id


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


def test_an_advisory_that_begins_after_midnight_utc_reaches_that_evening(db):
    """Its first day, as a stay's dates read it, is the earliest date anywhere when it begins."""
    people = _in_los_angeles(db)
    record = advisory(db, area=_circle(LOS_ANGELES), effective=AT + timedelta(minutes=30))
    match_advisories(db, advisories=[record], now=AT)
    assert set(_told(db, record)) == {people["last_day_there"]}


def test_an_advisory_reaches_a_stay_that_begins_where_its_last_day_has_already_come(db):
    """It ends at 20:00 UTC: 05:00 the next morning in Tokyo, so a stay there beginning on that
    next day overlaps it by five hours; one beginning the day after does not."""
    expires = datetime.combine(AT.date() + timedelta(days=1), time(20), tzinfo=UTC)
    next_morning = expires.date() + timedelta(days=1)
    arrives_then = _traveller(db, TOKYO, next_morning, next_morning + timedelta(days=4))
    _traveller(db, TOKYO, next_morning + timedelta(days=1), next_morning + timedelta(days=4))
    record = advisory(db, area=_circle(TOKYO), effective=AT - timedelta(hours=1), expires=expires)
    match_advisories(db, advisories=[record], now=AT)
    assert _told(db, record) == {arrives_then: Ahead.WAITING}


def test_a_stay_begins_on_its_first_day_in_utc(db):
    """At noon in Tokyo on a stay's first day the traveller is there (and asked)."""
    arrived = _traveller(db, TOKYO, AT.date(), AT.date() + timedelta(days=4))
    coming = _traveller(db, TOKYO, AT.date() + timedelta(days=1), AT.date() + timedelta(days=4))
    record = advisory(db, area=_circle(TOKYO), effective=AT - timedelta(hours=1))
    match_advisories(db, advisories=[record], now=AT)
    assert _told(db, record) == {arrived: Ahead.NO, coming: Ahead.WAITING}


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
