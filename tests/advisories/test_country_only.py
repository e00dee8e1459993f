"""Citizens known only by their country, and what the matches view says about each citizen:
an advisory of level 3, 4 or special for part of a country reaches those registered only as
that country, and their alert says so; lower levels do not. Both backends, both matching paths
(a new advisory, and the sweep), and the alert text."""

from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from service.advisories.models import Advisory
from service.geomatch.service import Sweeper
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body, in_days
from tests.builders import register, stay
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings

TOKYO_CIRCLE = {"circles": [{"lat": 35.68, "lon": 139.69, "radius_km": 30}]}
LOS_ANGELES = {"lat": 34.05, "lon": -118.24}
LOS_ANGELES_CIRCLE = {"circles": [{**LOS_ANGELES, "radius_km": 30}]}


@pytest.fixture
def consul(staff_headers):
    return staff_headers("consul")


def issue(client, consul, level, **overrides):
    body = advisory_body(level=level, area=TOKYO_CIRCLE, **overrides)
    if level in (3, 4, "special"):
        body.setdefault("expires", in_days(10))
    response = client.post("/v1/advisories", json=body, headers=consul)
    assert response.status_code == 201, response.text
    return response.json()


def reached(client, consul, advisory_id) -> set[str]:
    page = client.get(f"/v1/advisories/{advisory_id}/matches", headers=consul).json()
    return {item["citizen_id"] for item in page["items"]}


@pytest.mark.parametrize("level", [3, 4, "special"])
def test_urgent_levels_reach_country_only_citizens_of_a_partly_covered_country(
    client, consul, level
):
    jp_only, _, _ = register(client, location={"country": "JP"})
    register(client, location={"country": "KR"})
    advisory = issue(client, consul, level)
    assert reached(client, consul, advisory["id"]) == {jp_only}
    preview = client.post(
        "/v1/advisories/preview",
        json=advisory_body(level=level, area=TOKYO_CIRCLE, expires=in_days(10)),
        headers=consul,
    )
    assert preview.json()["citizens"] == 1


@pytest.mark.parametrize("level", [1, 2])
def test_lower_levels_do_not(client, consul, level, db):
    register(client, location={"country": "JP"})
    advisory = issue(client, consul, level)
    assert reached(client, consul, advisory["id"]) == set()
    assert db.scalars(select(Alert)).all() == []


def test_the_sweep_and_a_level_change_agree(client, consul, db, settings):
    jp_only, _, _ = register(client, location={"country": "JP"})
    advisory = issue(client, consul, 2)
    assert db.scalars(select(Alert)).all() == []
    raised = client.patch(f"/v1/advisories/{advisory['id']}", json={"level": 3}, headers=consul)
    assert raised.status_code == 200
    stored = db.scalar(select(Advisory).where(Advisory.public_id == advisory["id"]))
    assert stored.area["country_only"] == ["JP"]
    rows = db.scalars(select(Alert).where(Alert.revision == 2)).all()
    assert {r.channel for r in rows} == {"sms", "email"}
    # The sweep (the engine, on both backends) finds the same pairs, and adds nothing.
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    assert Sweeper().run(factory, now=stored.updated_at).enqueued == 0
    lowered = client.patch(f"/v1/advisories/{advisory['id']}", json={"level": 2}, headers=consul)
    assert lowered.status_code == 200
    db.expire_all()
    assert (
        db.scalar(select(Advisory).where(Advisory.public_id == advisory["id"])).area["country_only"]
        == []
    )
    assert reached(client, consul, advisory["id"]) == set()
    assert jp_only


def test_their_alert_says_the_area_is_part_of_their_country(
    database_url, db, staff_headers, twilio, smtp
):
    settings = make_settings(database_url, **notifier_settings(twilio, smtp))
    with bound_client(settings, db) as api:
        register(api, location={"country": "JP"}, phone="010-7123-0001", channels=["sms"])
        register(
            api, location={"lat": 35.68, "lon": 139.7}, phone="010-7123-0002", channels=["sms"]
        )
        # In Tokyo, and registered for a trip to "Japan" too: the area reached them by Tokyo.
        # In Osaka (outside the circle), with the same trip: reached only by "Japan".
        for phone, (lat, lon) in (("0003", (35.68, 139.7)), ("0004", (34.69, 135.5))):
            register(
                api,
                location={"lat": lat, "lon": lon},
                stays=[stay(days_from_now=0, length=5, country="JP")],
                phone=f"010-7123-{phone}",
                channels=["sms"],
            )
        # Known only as "JP" now, with a Tokyo trip after the advisory ends (in 10 days): that
        # stay is not what reached them.
        register(
            api,
            location={"country": "JP"},
            stays=[stay(days_from_now=21, length=5, lat=35.68, lon=139.69)],
            phone="010-7123-0005",
            channels=["sms"],
        )
        issue(api, staff_headers("consul"), 3)
        dispatcher = dispatcher_in(db, settings)
        dispatcher.drain()
        dispatcher.close()
    [country_only] = twilio.bodies_to("+821071230001")
    [in_tokyo] = twilio.bodies_to("+821071230002")
    [in_tokyo_with_a_trip] = twilio.bodies_to("+821071230003")
    [in_osaka_with_a_trip] = twilio.bodies_to("+821071230004")
    assert "일본 일부 지역 경보" in country_only
    assert "일부 지역" not in in_tokyo
    assert "일부 지역" not in in_tokyo_with_a_trip
    assert "일본 일부 지역 경보" in in_osaka_with_a_trip
    [with_a_later_trip] = twilio.bodies_to("+821071230005")
    assert "일본 일부 지역 경보" in with_a_later_trip


def test_no_note_for_a_citizen_in_the_area_before_it_takes_effect(
    database_url, db, staff_headers, twilio, smtp
):
    """In Tokyo now, with a stay registered as "JP" only: an advisory for Tokyo that takes
    effect in an hour reaches them by the stay, but they are in the area (review of ffb59ed)."""
    settings = make_settings(database_url, **notifier_settings(twilio, smtp))
    with bound_client(settings, db) as api:
        register(
            api,
            location={"lat": 35.68, "lon": 139.7},
            stays=[stay(days_from_now=0, length=5, country="JP")],
            phone="010-7123-0006",
            channels=["sms"],
        )
        issue(api, staff_headers("consul"), 3, effective=in_days(1 / 24))
        dispatcher = dispatcher_in(db, settings)
        dispatcher.drain()
        dispatcher.close()
    [sms] = twilio.bodies_to("+821071230006")
    assert "일부 지역" not in sms


def test_no_note_on_the_last_evening_of_a_stay_in_the_area(
    database_url, db, staff_headers, twilio, smtp
):
    """Known only as "US", with a Los Angeles stay whose last day is yesterday in UTC: at 03:00
    UTC it is still that evening there, so the Los Angeles advisory reaches them by the stay
    and the message says nothing of "part of the United States" (a stay's dates are its
    traveller's calendar, tests/geomatch/test_local_dates.py)."""
    at = datetime.combine(date.today() + timedelta(days=3), time(3), tzinfo=UTC)
    last_day = at.date() - timedelta(days=1)
    settings = make_settings(database_url, **notifier_settings(twilio, smtp))
    with bound_client(settings, db) as api:
        register(
            api,
            location={"country": "US"},
            stays=[{**LOS_ANGELES, "from": date.today().isoformat(), "to": last_day.isoformat()}],
            phone="010-7123-0007",
            channels=["sms"],
        )
        body = advisory_body(
            level=3, area=LOS_ANGELES_CIRCLE, expires=(at + timedelta(days=2)).isoformat()
        )
        assert api.post("/v1/advisories", json=body, headers=staff_headers("consul")).is_success
        dispatcher = dispatcher_in(db, settings)
        dispatcher.step(now=at, channels=["sms"])
        dispatcher.close()
    [sms] = twilio.bodies_to("+821071230007")
    assert "일부 지역" not in sms


def test_matches_show_the_place_that_matched(client, consul):
    in_thailand_going_to_japan, _, _ = register(
        client,
        location={"lat": 13.75, "lon": 100.5},
        stays=[stay(days_from_now=2, length=5, lat=35.7, lon=139.7)],
    )
    in_tokyo, _, _ = register(client, location={"lat": 35.69, "lon": 139.69})
    advisory = issue(client, consul, 2)
    page = client.get(f"/v1/advisories/{advisory['id']}/matches", headers=consul).json()
    by_id = {item["citizen_id"]: item for item in page["items"]}
    trip = by_id[in_thailand_going_to_japan]
    assert (trip["place"], trip["country"]) == ("stay", "JP")  # not "TH", where they are now
    assert trip["matched"]["from"] and trip["matched"]["to"]
    assert (trip["matched"]["lat"], trip["matched"]["lon"]) == (35.7, 139.7)
    here = by_id[in_tokyo]
    assert (here["place"], here["country"], here["matched"]["from"]) == ("current", "JP", None)
