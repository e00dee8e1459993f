"""A while after an advisory ended, its alerts and check-in answers are deleted, and what staff saw
of them (delivery counts, the roll call's counts) is kept; then an erased citizen's bare row goes
too. An advisory still sending, or ended too recently, is left alone."""

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update

from service.advisories.models import Advisory
from service.checkin.models import Checkin, CheckinAnswer, HelpMessage
from service.checkin.retention import forget_ended_ledgers
from service.citizens.models import Citizen
from service.citizens.service import drop_bare_rows, purge_unverified
from service.config import Settings
from service.db import utcnow
from service.ledger.models import Alert
from service.scheduler import jobs
from tests.builders import register
from tests.checkin.test_checkin_flow import CHECKIN_LINK
from tests.checkin.test_rollcall import AREA, BANGKOK, issue, person

KEPT_DAYS = 365
A_YEAR_ON = timedelta(days=KEPT_DAYS + 1)


def _rows(db, advisory_public_id: str) -> dict[str, int]:
    db.expire_all()
    advisory_id = db.scalar(select(Advisory.id).where(Advisory.public_id == advisory_public_id))
    return {
        table.__tablename__: db.scalar(
            select(func.count()).select_from(table).where(table.advisory_id == advisory_id)
        )
        for table in (Alert, CheckinAnswer, Checkin)
    }


def _advisory(db, public_id: str) -> Advisory:
    db.expire_all()
    return db.scalar(select(Advisory).where(Advisory.public_id == public_id))


def _ended_a_year_ago() -> dict:
    end = utcnow() - A_YEAR_ON
    return {"effective": end - timedelta(days=1), "expires": end, "updated_at": end}


def _views(api, consul, advisory: str) -> tuple[dict, dict]:
    alerts = api.get(f"/v1/advisories/{advisory}/alerts", headers=consul)
    roll = api.get(f"/v1/advisories/{advisory}/rollcall", headers=consul)
    assert alerts.status_code == roll.status_code == 200, (alerts.text, roll.text)
    return alerts.json(), roll.json()


@pytest.fixture
def answered(api, consul, dispatcher, twilio, reply):
    """A cancelled level-4 advisory over Bangkok: one citizen said safe by SMS, one asked for
    help on the page, one never answered; the warnings and the all-clears all sent."""
    safe_id, safe_phone = person(api, BANGKOK)
    _, help_phone = person(api, BANGKOK)
    silent_id, silent_manage, _ = register(api, location=BANGKOK)
    advisory = issue(api, consul, level=4, area=AREA)
    dispatcher.drain()
    assert reply(safe_phone, "1").status_code == 200
    token = CHECKIN_LINK.search(twilio.bodies_to(help_phone)[0]).group(1)
    assert api.post(f"/c/{token}", data={"answer": "help", "note": "hurt"}).status_code == 200
    assert api.post(f"/v1/advisories/{advisory}/cancel", headers=consul).status_code == 200
    dispatcher.drain()
    return advisory, {"safe": safe_id, "silent": silent_id}, silent_manage


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_year_after_it_ended_its_rows_go_and_staff_see_the_same_counts(api, consul, db, answered):
    advisory, _, _ = answered
    alerts_before, roll_before = _views(api, consul, advisory)
    assert roll_before["counts"] == {"safe": 1, "help": 1, "no_answer": 1, "unreachable": 0}
    before = _rows(db, advisory)
    assert before["alert"] >= 8 and before["checkin"] == 2 and before["checkin_answer"] == 2

    # A day short of the year: nothing goes.
    assert (
        forget_ended_ledgers(db, now=utcnow() + A_YEAR_ON - timedelta(days=2), kept_days=365) == 0
    )
    assert _rows(db, advisory) == before and _advisory(db, advisory).ledger_kept is None

    later = utcnow() + A_YEAR_ON
    gone = forget_ended_ledgers(db, now=later, kept_days=KEPT_DAYS)
    assert gone == sum(before.values())
    assert _rows(db, advisory) == {"alert": 0, "checkin_answer": 0, "checkin": 0}
    assert _advisory(db, advisory).ledger_forgotten_at == later

    alerts_after, roll_after = _views(api, consul, advisory)
    assert alerts_after["counts"] == alerts_before["counts"]
    assert alerts_after["by_revision"] == alerts_before["by_revision"]
    assert alerts_after["items"] == [] and alerts_after["rows_forgotten_at"] is not None
    assert alerts_before["rows_forgotten_at"] is None
    assert roll_after["counts"] == roll_before["counts"]
    assert roll_after["by_country"] == roll_before["by_country"]
    assert roll_after["items"] == [] and roll_after["rows_forgotten_at"] is not None
    # Once done, the job passes it by.
    assert forget_ended_ledgers(db, now=later + timedelta(hours=1), kept_days=KEPT_DAYS) == 0


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_large_ledger_goes_over_several_runs_its_counts_kept_before_the_first_row(
    api, consul, db, answered
):
    advisory, _, _ = answered
    alerts_before, roll_before = _views(api, consul, advisory)
    total = sum(_rows(db, advisory).values())
    later = utcnow() + A_YEAR_ON
    runs = 0
    while _advisory(db, advisory).ledger_forgotten_at is None:
        runs += 1
        assert runs <= total + 1, "never finished"
        assert forget_ended_ledgers(db, now=later, kept_days=KEPT_DAYS, most_rows=3) <= 3
        assert _advisory(db, advisory).ledger_kept is not None
        alerts_now, roll_now = _views(api, consul, advisory)
        assert alerts_now["counts"] == alerts_before["counts"]
        assert roll_now["counts"] == roll_before["counts"]
    assert runs >= total // 3
    assert _rows(db, advisory) == {"alert": 0, "checkin_answer": 0, "checkin": 0}


@pytest.mark.usefixtures("app_sessions_in_test")
def test_an_active_advisory_a_recent_one_and_one_still_sending_keep_their_rows(
    api, consul, db, dispatcher
):
    person(api, BANGKOK)
    active = issue(api, consul, level=2, area=AREA)
    recent = issue(api, consul, level=2, area=AREA)
    dispatcher.drain()
    assert api.post(f"/v1/advisories/{recent}/cancel", headers=consul).status_code == 200
    dispatcher.drain()
    # Ended a year ago by the record, yet an alert of it is still waiting to go.
    sending = issue(api, consul, level=2, area=AREA)
    db.execute(
        update(Advisory)
        .where(Advisory.public_id == sending)
        .values(status="expired", **_ended_a_year_ago())
    )
    kept = {a: _rows(db, a) for a in (active, recent, sending)}
    assert all(rows["alert"] for rows in kept.values())

    assert forget_ended_ledgers(db, now=utcnow(), kept_days=KEPT_DAYS) == 0
    assert {a: _rows(db, a) for a in kept} == kept
    assert _advisory(db, sending).ledger_kept is None

    dispatcher.drain()  # now it has gone: forgotten at the next run
    assert forget_ended_ledgers(db, now=utcnow(), kept_days=KEPT_DAYS) > 0
    assert _rows(db, sending)["alert"] == 0
    assert _rows(db, active) == kept[active] and _rows(db, recent) == kept[recent]


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_forgotten_advisory_cannot_be_cancelled_nor_asked_again(api, consul, db, dispatcher):
    person(api, BANGKOK)
    advisory = issue(api, consul, level=2, area=AREA)
    dispatcher.drain()
    db.execute(
        update(Advisory)
        .where(Advisory.public_id == advisory)
        .values(status="expired", **_ended_a_year_ago())
    )
    assert forget_ended_ledgers(db, now=utcnow(), kept_days=KEPT_DAYS) > 0

    cancel = api.post(f"/v1/advisories/{advisory}/cancel", headers=consul)
    assert cancel.status_code == 409, cancel.text
    assert "retention" in cancel.json()["detail"]
    round_ = api.post(f"/v1/advisories/{advisory}/rollcall", headers=consul)
    assert round_.status_code == 409, round_.text
    assert _advisory(db, advisory).status == "expired"
    assert _rows(db, advisory)["alert"] == 0  # nothing was queued


@pytest.mark.usefixtures("app_sessions_in_test")
def test_an_erased_citizens_bare_row_goes_once_nothing_refers_to_it(api, consul, db, answered):
    _, who, silent_manage = answered
    for cid in who.values():
        citizen = db.scalar(select(Citizen).where(Citizen.public_id == cid))
        db.add(HelpMessage(citizen_id=citizen.id, channel="sms"))
    db.flush()
    erased = api.delete(f"/v1/citizens/{who['silent']}", headers=silent_manage)
    assert erased.status_code == 204, erased.text

    def present() -> set[str]:
        db.expire_all()
        return set(db.scalars(select(Citizen.public_id).where(Citizen.public_id.in_(who.values()))))

    purge_unverified(db, now=utcnow(), ttl_h=24)
    assert present() == set(who.values())  # its alerts and help message still name it

    # An alert of an advisory whose rows are still kept (still in force, say) names it too.
    silent_id = db.scalar(select(Citizen.id).where(Citizen.public_id == who["silent"]))
    kept = Alert(advisory_id=10**9, revision=1, citizen_id=silent_id, channel="sms", status="sent")
    db.add(kept)
    db.flush()
    forget_ended_ledgers(db, now=utcnow() + A_YEAR_ON, kept_days=KEPT_DAYS)
    assert db.scalar(select(func.count()).select_from(HelpMessage)) == 0
    assert present() == set(who.values())
    db.delete(kept)
    db.flush()
    assert drop_bare_rows(db, [silent_id]) == 1
    assert present() == {who["safe"]}  # the active record stays, alerts or none


def test_with_no_retention_the_job_forgets_nothing(db, settings, api, consul):
    job = next(j for j in jobs(settings) if j.id == "forget-ended-ledgers")
    db.add(HelpMessage(citizen_id=1, channel="sms", received_at=utcnow() - A_YEAR_ON * 5))
    db.flush()
    assert job.body(db, settings.model_copy(update={"ledger_retention_days": 0})) == 0
    assert db.scalar(select(func.count()).select_from(HelpMessage)) == 1
    assert job.body(db, settings) == 1
    assert db.scalar(select(func.count()).select_from(HelpMessage)) == 0


@pytest.mark.parametrize(("days", "accepted"), [(0, True), (1, False), (29, False), (30, True)])
def test_alerts_and_answers_are_kept_a_month_at_least_or_for_ever(days, accepted):
    """A review: kept a day, they went while check-in links still took answers, which then
    landed on an advisory whose rows were forgotten, for good."""
    if accepted:
        made = Settings(secret_key="k" * 40, ledger_retention_days=days)
        assert made.ledger_retention_days == days
    else:
        with pytest.raises(ValidationError, match="30 days at least"):
            Settings(secret_key="k" * 40, ledger_retention_days=days)


def test_an_erased_record_nothing_names_goes_a_day_after_its_erasure(api, db):
    """A review: a verified record erased before any alert named it kept its bare row for
    ever once the hourly purge looked only at records never verified."""
    cid, manage, _ = register(api, location=BANGKOK)
    assert db.scalar(select(Citizen.verified_at).where(Citizen.public_id == cid)) is not None
    assert api.delete(f"/v1/citizens/{cid}", headers=manage).status_code == 204

    def present() -> bool:
        db.expire_all()
        return db.scalar(select(Citizen.id).where(Citizen.public_id == cid)) is not None

    purge_unverified(db, now=utcnow() + timedelta(hours=12), ttl_h=24)
    assert present()  # a match or a send in flight at the erasure may still name it
    purge_unverified(db, now=utcnow() + timedelta(hours=36), ttl_h=24)
    assert not present()
