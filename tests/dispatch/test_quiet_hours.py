"""Quiet hours end to end, under a frozen clock (the dispatcher's `now`), on every backend: a
level 1-2 alert waits until the morning where the citizen is; urgent ones, CAP Immediate,
check-in requests and citizens without quiet hours are not held. The expected instants are
computed here from local wall times with zoneinfo."""

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from service.advisories import formats
from service.advisories.schemas import AdvisoryCreate
from service.advisories.service import draft_from_request
from service.citizens.models import Citizen
from service.ledger import states
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body, in_days
from tests.advisories.feed_samples import sample
from tests.builders import register, stay
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.fake_twilio import Answer

BANGKOK = {"lat": 13.7563, "lon": 100.5018}
TOKYO = {"lat": 35.6895, "lon": 139.6917}
NEW_YORK = {"lat": 40.7128, "lon": -74.0060}
NIGHT = {"from": "22:00", "to": "07:00"}
CAP_SAMPLE = Path(__file__).parents[2] / "examples" / "tokyo-earthquake.cap.xml"


def next_reading(zone: str, hour: int, minute: int) -> datetime:
    """The next instant (after the real now) at which the clock of `zone` reads hour:minute."""
    tz = ZoneInfo(zone)
    today = datetime.now(tz)
    at = datetime.combine(today.date(), time(hour, minute), tzinfo=tz)
    if at <= today:
        at = datetime.combine(today.date() + timedelta(days=1), time(hour, minute), tzinfo=tz)
    return at.astimezone(UTC)


def seven_next_morning(zone: str, night: datetime) -> datetime:
    tz = ZoneInfo(zone)
    day = night.astimezone(tz).date() + timedelta(days=1)
    return datetime.combine(day, time(7, 0), tzinfo=tz).astimezone(UTC)


def rows(db) -> list[Alert]:
    db.expire_all()
    return list(db.scalars(select(Alert).order_by(Alert.id)))


def issue(api, consul, **overrides) -> dict:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def world(database_url, db, twilio, smtp, staff_headers):
    """An API and a dispatcher on the test's transaction (SMS only matters here)."""
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), dispatch_max_attempts=2
    )
    with bound_client(settings, db) as api:
        dispatcher = dispatcher_in(db, settings)
        yield api, dispatcher, staff_headers("consul")
        dispatcher.close()


def test_a_level_1_alert_at_2330_in_bangkok_waits_until_0700_and_then_goes(db, world, twilio):
    api, dispatcher, consul = world
    register(api, location=BANGKOK, phone="010-7400-0001", channels=["sms"], quiet_hours=NIGHT)
    advisory = issue(api, consul, level=1, area={"countries": ["TH"]})
    night = next_reading("Asia/Bangkok", 23, 30)
    morning = seven_next_morning("Asia/Bangkok", night)
    assert morning - night == timedelta(hours=7, minutes=30)

    tally = dispatcher.step(now=night)
    [row] = rows(db)
    assert tally.claimed == 1 and tally.by_status == {states.RETRY_WAIT: 1}
    assert (row.status, row.error_code, row.due_at) == (states.RETRY_WAIT, "quiet-hours", morning)
    assert row.last_error == "quiet hours until 07:00 Asia/Bangkok"
    assert twilio.bodies_to("+821074000001") == []

    # The alerts view shows it as deferred, and counts it.
    view = api.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()
    assert view["counts"] == {"retry_wait": {"sms": 1}, "deferred": {"sms": 1}}
    assert [r["counts"] for r in view["by_revision"]] == [view["counts"]]
    [item] = view["items"]
    assert datetime.fromisoformat(item["deferred_until"]) == morning
    listed = api.get("/v1/alerts?status=retry_wait", headers=consul).json()["items"]
    assert [datetime.fromisoformat(i["deferred_until"]) for i in listed] == [morning]

    assert dispatcher.step(now=morning - timedelta(minutes=1)).claimed == 0  # not due yet
    tally = dispatcher.step(now=morning)
    [row] = rows(db)
    assert tally.by_status == {states.SENT: 1} and row.status == states.SENT
    assert len(twilio.bodies_to("+821074000001")) == 1
    # The night's claim was not a try: one attempt counted against the budget.
    assert row.attempts - row.retry_base == 1
    [item] = api.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()["items"]
    assert item["deferred_until"] is None


def test_a_deferral_does_not_use_up_the_retry_budget(db, world, twilio):
    # At most 2 attempts: the night's hold and a 500 at 07:00 would be 2 without the refund,
    # and the row would fail. It is retried, and sent.
    api, dispatcher, consul = world
    register(api, location=BANGKOK, phone="010-7400-0002", channels=["sms"], quiet_hours=NIGHT)
    twilio.script("+821074000002", Answer(500))
    issue(api, consul, level=2, area={"countries": ["TH"]})
    night = next_reading("Asia/Bangkok", 23, 30)
    morning = seven_next_morning("Asia/Bangkok", night)
    dispatcher.step(now=night)
    dispatcher.step(now=morning)
    [row] = rows(db)
    assert row.status == states.RETRY_WAIT and row.error_code == "500"
    dispatcher.step(now=morning + timedelta(minutes=5))
    [row] = rows(db)
    assert row.status == states.SENT and row.attempts == 3 and row.retry_base == 1


def test_urgent_alerts_check_ins_and_citizens_without_quiet_hours_go_at_once(db, world, twilio):
    api, dispatcher, consul = world
    _, _, quiet = register(
        api, location=BANGKOK, phone="010-7400-0003", channels=["sms"], quiet_hours=NIGHT
    )
    register(api, location=BANGKOK, phone="010-7400-0004", channels=["sms"], quiet_hours=None)
    routine = issue(api, consul, level=1, area={"countries": ["TH"]}, title={"ko": "방콕 유의"})
    issue(api, consul, level=4, area={"countries": ["TH"]}, title={"ko": "방콕 금지"})
    # A check-in request ("are you safe?") about the level-1 advisory, as a round adds it.
    sleeper = db.scalar(select(Citizen.id).where(Citizen.quiet_from.is_not(None)))
    first = rows(db)[0]
    db.add(
        Alert(
            advisory_id=first.advisory_id,
            revision=1,
            citizen_id=sleeper,
            channel="sms",
            priority=0,
            status=states.PENDING,
            created_at=first.created_at,
            checkin_round=1,
        )
    )
    db.flush()
    night = next_reading("Asia/Bangkok", 23, 30)
    dispatcher.step(now=night)
    by_status = {(r.citizen_id, r.advisory_id, r.checkin_round): r.status for r in rows(db)}
    held = [key for key, status in by_status.items() if status == states.RETRY_WAIT]
    routine_id = first.advisory_id
    assert held == [(sleeper, routine_id, 0)]  # only the level-1 alert to the sleeper waits
    assert sum(status == states.SENT for status in by_status.values()) == 4
    assert len(twilio.bodies_to("+821074000003")) == 2  # the level-4 alert and the check-in
    assert len(twilio.bodies_to("+821074000004")) == 2  # both advisories, no quiet hours
    assert quiet["quiet_hours"] == NIGHT and routine["level"] == 1


@pytest.mark.parametrize(
    ("where", "country", "zone", "night", "morning"),
    [
        # New York: clocks go forward at 02:00 on 2027-03-14; 07:00 EDT is 11:00 UTC, not 12:00.
        (
            {"lat": 40.7128, "lon": -74.0060},
            "US",
            "America/New_York",
            datetime(2027, 3, 14, 1, 30, tzinfo=ZoneInfo("America/New_York")),
            datetime(2027, 3, 14, 7, 0, tzinfo=ZoneInfo("America/New_York")),
        ),
        # Sydney: summer time ends at 03:00 on 2027-04-04; 07:00 AEST is 21:00 UTC the day before.
        (
            {"lat": -33.8688, "lon": 151.2093},
            "AU",
            "Australia/Sydney",
            datetime(2027, 4, 3, 23, 30, tzinfo=ZoneInfo("Australia/Sydney")),
            datetime(2027, 4, 4, 7, 0, tzinfo=ZoneInfo("Australia/Sydney")),
        ),
    ],
)
def test_the_morning_follows_a_dst_change(db, world, twilio, where, country, zone, night, morning):
    api, dispatcher, consul = world
    register(api, location=where, phone="010-7400-0005", channels=["sms"], quiet_hours=NIGHT)
    issue(api, consul, level=2, area={"countries": [country]}, expires=in_days(800))
    night, morning = night.astimezone(UTC), morning.astimezone(UTC)
    dispatcher.step(now=night)
    [row] = rows(db)
    assert (row.status, row.due_at) == (states.RETRY_WAIT, morning)
    assert row.last_error == f"quiet hours until 07:00 {zone}"
    assert dispatcher.step(now=morning - timedelta(seconds=1)).claimed == 0
    dispatcher.step(now=morning)
    assert [r.status for r in rows(db)] == [states.SENT]


def test_a_country_only_citizen_and_a_stay_follow_the_local_clock(db, world, twilio):
    api, dispatcher, consul = world
    register(
        api, location={"country": "TH"}, phone="010-7400-0006", channels=["sms"], quiet_hours=NIGHT
    )
    # Registered in Tokyo (01:30 there) with a stay in Bangkok under way: the trip is where
    # they are today, and its clock is read.
    register(
        api,
        location=TOKYO,
        phone="010-7400-0007",
        channels=["sms"],
        quiet_hours=NIGHT,
        stays=[stay(0, 10, **BANGKOK)],
    )
    issue(api, consul, level=1, area={"countries": ["TH"]})
    night = next_reading("Asia/Bangkok", 23, 30)
    assert night.date() - date.today() <= timedelta(days=2)  # inside the stay
    dispatcher.step(now=night)
    held = rows(db)
    assert len(held) == 2
    assert {(r.status, r.last_error) for r in held} == {
        (states.RETRY_WAIT, "quiet hours until 07:00 Asia/Bangkok")
    }


def test_an_urgent_warning_told_ahead_goes_at_once_whatever_the_hour_at_home(db, world, twilio):
    """Told ahead (the advisory is not in effect yet) to a citizen registered in New York whose
    Tokyo stay is under way: the level-4 warning goes at 23:00 New York time (13:00 in Tokyo).
    Holding urgent alerts told ahead by the clock of where the citizen sleeps would hold them
    for people who are there (review of ffb59ed). An
    advisory that ends before the morning there does not expire it either."""
    api, dispatcher, consul = world
    night = next_reading("America/New_York", 23, 0)
    first, last = night.date() - timedelta(days=2), night.date() + timedelta(days=8)
    register(
        api,
        location=NEW_YORK,
        phone="010-7401-0001",
        channels=["sms"],
        quiet_hours=NIGHT,
        stays=[{**TOKYO, "from": first.isoformat(), "to": last.isoformat()}],
    )
    issue(
        api,
        consul,
        level=4,
        area={"circles": [{**TOKYO, "radius_km": 50}]},
        effective=(night + timedelta(minutes=5)).isoformat(),
        expires=(night + timedelta(hours=4)).isoformat(),
    )
    [row] = rows(db)
    assert row.told_ahead == 1  # not in effect yet
    dispatcher.step(now=night)
    [row] = rows(db)
    assert (row.status, row.last_error) == (states.SENT, None)
    assert len(twilio.bodies_to("+821074010001")) == 1


@pytest.mark.parametrize(("urgency", "held"), [("Immediate", False), ("Expected", True)])
def test_a_cap_level_2_alert_of_urgency_immediate_ignores_quiet_hours(
    db, world, twilio, urgency, held
):
    api, dispatcher, consul = world
    register(api, location=TOKYO, phone="010-7400-0008", channels=["sms"], quiet_hours=NIGHT)
    cap = CAP_SAMPLE.read_text("utf-8").replace("<urgency>Immediate<", f"<urgency>{urgency}<")
    imported = api.post(
        "/v1/advisories/import",
        content=cap.encode(),
        headers={**consul, "Content-Type": "application/cap+xml"},
    )
    assert imported.status_code == 201, imported.text
    dispatcher.step(now=next_reading("Asia/Tokyo", 23, 30))
    [row] = rows(db)
    assert row.status == (states.RETRY_WAIT if held else states.SENT)
    assert len(twilio.bodies_to("+821074000008")) == (0 if held else 1)


def test_an_advisory_that_ends_before_the_morning_expires_instead_of_waiting(db, world, twilio):
    api, dispatcher, consul = world
    register(api, location=BANGKOK, phone="010-7400-0009", channels=["sms"], quiet_hours=NIGHT)
    night = next_reading("Asia/Bangkok", 23, 30)
    issue(
        api,
        consul,
        level=1,
        area={"countries": ["TH"]},
        expires=(night + timedelta(hours=2)).isoformat(),
    )
    dispatcher.step(now=night)
    [row] = rows(db)
    assert row.status == states.EXPIRED
    assert row.last_error == "advisory ends during the quiet hours until 07:00 Asia/Bangkok"
    assert twilio.bodies_to("+821074000009") == []


def test_cap_terms_are_kept_in_feed_revisions_only():
    [nws] = formats.parse(
        "geojson", sample("nws/nws-api-alerts-active-zone-ORZ004-2019-12-20.json")
    ).drafts
    assert (nws.content()["severity"], nws.content()["urgency"]) == ("Severe", "Future")
    [cap] = formats.parse("cap", CAP_SAMPLE.read_bytes()).drafts
    assert (cap.content()["severity"], cap.content()["urgency"]) == ("Severe", "Immediate")
    odd = CAP_SAMPLE.read_text("utf-8").replace("Immediate", "immediate").replace("Severe", "Dire")
    [lenient] = formats.parse("cap", odd.encode()).drafts
    assert lenient.urgency == "Immediate" and "severity" not in lenient.content()
    # A staff advisory's snapshot has no CAP keys at all: older revisions compare equal.
    staff = draft_from_request(
        AdvisoryCreate.model_validate(advisory_body()), max_vertices=100, now=datetime.now(UTC)
    )
    assert not {"severity", "urgency"} & staff.content().keys()


def test_a_trip_over_by_its_own_calendar_is_not_where_the_citizen_is(db, world, twilio):
    """Home in New York; a Tokyo trip's last day was D. At 02:00 on D+1 in Tokyo (midday in New
    York) the UTC date is still D, but the trip is over by its own dates: a level-1 alert about
    the US that ends in 3 hours goes, rather than wait for Tokyo's morning and expire."""
    api, dispatcher, consul = world
    last = date.today() + timedelta(days=5)
    first = last - timedelta(days=4)
    register(
        api,
        location=NEW_YORK,
        phone="010-7402-0001",
        channels=["sms"],
        quiet_hours=NIGHT,
        stays=[{**TOKYO, "from": first.isoformat(), "to": last.isoformat()}],
    )
    now = datetime.combine(last + timedelta(days=1), time(2, 0), tzinfo=ZoneInfo("Asia/Tokyo"))
    now = now.astimezone(UTC)
    assert now.date() == last  # the UTC date still reads the trip's last day
    ends = (now + timedelta(hours=3)).isoformat()
    issue(api, consul, level=1, area={"countries": ["US"]}, expires=ends)
    dispatcher.step(now=now)
    [row] = rows(db)
    assert (row.status, row.last_error) == (states.SENT, None)


def test_a_current_place_moved_during_a_trip_is_where_the_citizen_is(db, world, twilio):
    """Registered with a Bangkok trip under way, the citizen then moves their current place to
    New York (PUT /location), after the stay was written: at 13:00 in New York (midnight in
    Bangkok) a level-1 alert about the US goes, by New York's clock."""
    api, dispatcher, consul = world
    today = date.today()
    public_id, manage, _ = register(
        api,
        location=TOKYO,
        phone="010-7402-0002",
        channels=["sms"],
        quiet_hours=NIGHT,
        stays=[{**BANGKOK, "from": today.isoformat(), "to": (today + timedelta(10)).isoformat()}],
    )
    moved = api.put(f"/v1/citizens/{public_id}/location", json=NEW_YORK, headers=manage)
    assert moved.status_code == 200, moved.text
    now = next_reading("America/New_York", 13, 0)
    ends = (now + timedelta(hours=3)).isoformat()
    issue(api, consul, level=1, area={"countries": ["US"]}, expires=ends)
    dispatcher.step(now=now)
    [row] = rows(db)
    assert (row.status, row.last_error) == (states.SENT, None)
