"""At most max_routine_alerts_per_hour level 1-2 alerts reach one citizen in an hour; the rest
wait their turn (nothing is dropped). Levels 3, 4 and special are never held."""

from dataclasses import replace

from sqlalchemy import select

from service.advisories.models import Advisory
from service.dispatch.dispatcher import _routine
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body, in_days
from tests.builders import register
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.test_sms_text import content


def test_routine_alerts_are_capped_per_citizen_and_urgent_ones_are_not(
    database_url, db, staff_headers, twilio, smtp
):
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), max_routine_alerts_per_hour=3
    )
    consul = staff_headers("consul")
    with bound_client(settings, db) as api:
        register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7321-0001", channels=["sms"])
        for n in range(5):
            body = advisory_body(level=1 + n % 2, title={"ko": f"도쿄 주의 {n}", "en": f"T {n}"})
            assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
        urgent = advisory_body(level=3, expires=in_days(5), title={"ko": "도쿄 출국권고"})
        assert api.post("/v1/advisories", json=urgent, headers=consul).status_code == 201
        dispatcher = dispatcher_in(db, settings)
        dispatcher.drain()
        dispatcher.close()
    db.expire_all()
    rows = list(db.scalars(select(Alert).order_by(Alert.id)))
    sent = [r for r in rows if r.status == "sent"]
    held = [r for r in rows if r.status == "retry_wait"]
    assert len(rows) == 6
    assert len(sent) == 4 and len(held) == 2  # 3 routine and the level-3 one; 2 routine wait
    assert all(r.error_code == "citizen-cap" and r.due_at is not None for r in held)
    bodies = twilio.bodies_to("+821073210001")
    assert len(bodies) == 4 and any("출국권고" in b for b in bodies)


def test_a_correction_of_an_advisory_they_had_this_hour_is_never_held(
    database_url, db, staff_headers, twilio, smtp
):
    """Found by a probe: revisions of one level 2 counted as further alerts, and past the cap
    the latest (the correction) was held an hour while the citizen kept an older text. A newer
    revision of an advisory they had this hour replaces it; a new advisory is still held."""
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), max_routine_alerts_per_hour=2
    )
    consul = staff_headers("consul")
    with bound_client(settings, db) as api:
        register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7321-0002", channels=["sms"])
        dispatcher = dispatcher_in(db, settings)
        first = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
        dispatcher.drain()
        for n in range(3):
            fixed = {"message": {"ko": f"고친 안내 {n}", "en": f"Fixed {n}"}}
            changed = api.patch(f"/v1/advisories/{first['id']}", json=fixed, headers=consul)
            assert changed.status_code == 200, changed.text
            dispatcher.drain()
        other = advisory_body(title={"ko": "다른 주의", "en": "Another"})
        assert api.post("/v1/advisories", json=other, headers=consul).status_code == 201
        dispatcher.drain()
        dispatcher.close()
    bodies = twilio.bodies_to("+821073210002")
    assert len(bodies) == 4 and "고친 안내 2" in bodies[-1]  # the first, then each correction
    db.expire_all()
    [held] = db.scalars(select(Alert).where(Alert.status == "retry_wait")).all()
    corrected = db.scalar(select(Advisory.id).where(Advisory.public_id == first["id"]))
    assert held.error_code == "citizen-cap" and held.advisory_id != corrected


def test_the_cap_counts_only_routine_alerts_not_urgent_ones_or_check_in_asks(
    database_url, db, staff_headers, twilio, smtp
):
    """Found by a newcomer: a level 3 and a roll call's "are you safe?" counted towards the
    hour's routine alerts, so the citizen's next level 1-2 alerts were held early."""
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), max_routine_alerts_per_hour=2
    )
    consul = staff_headers("consul")
    with bound_client(settings, db) as api:
        register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7321-0002", channels=["sms"])
        urgent = advisory_body(level=3, expires=in_days(5), title={"ko": "도쿄 출국권고"})
        created = api.post("/v1/advisories", json=urgent, headers=consul)
        assert created.status_code == 201
        dispatcher = dispatcher_in(db, settings)
        dispatcher.drain()
        rollcall = api.post(f"/v1/advisories/{created.json()['id']}/rollcall", headers=consul)
        assert rollcall.status_code in (200, 201, 202), rollcall.text
        dispatcher.drain()
        assert len(twilio.bodies_to("+821073210002")) == 2  # the level 3 and the round's ask
        for n in range(3):
            body = advisory_body(level=1, title={"ko": f"도쿄 주의 {n}", "en": f"T {n}"})
            assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
        dispatcher.drain()
        dispatcher.close()
    db.expire_all()
    routine = list(db.scalars(select(Alert).where(Alert.priority >= 3).order_by(Alert.id)))
    assert [r.status for r in routine] == ["sent", "sent", "retry_wait"]
    assert routine[-1].error_code == "citizen-cap"


def test_what_goes_at_once_is_never_routine_for_the_cap():
    """A level 1-2 CAP alert of urgency Immediate ignores quiet hours, and one of severity
    Extreme asks "are you safe?": neither waits behind the hour's routine alerts (review)."""

    routine = replace(content("m"), level="2")  # tests/dispatch/test_sms_text.py's
    assert _routine(routine)
    assert not _routine(replace(routine, urgency="Immediate"))
    assert not _routine(replace(routine, severity="Extreme"))
    assert not _routine(replace(routine, kind="cancel"))
    assert not _routine(replace(routine, level="3"))
