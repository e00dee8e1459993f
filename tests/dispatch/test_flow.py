"""End to end on both backends: register, issue, dispatch through the real twilio SDK to the
fake Twilio and through smtplib to aiosmtpd; then what staff see."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from service.config import Settings
from service.db import utcnow
from service.dispatch.workers import DatabaseClock
from service.ledger.models import Alert
from service.ledger.outbox import overtaken
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.fake_twilio import FakeTwilio
from tests.dispatch.smtp_sink import SmtpSink

TOKYO = {"lat": 35.5, "lon": 139.5}


@pytest.fixture
def dispatch_settings(database_url: str, twilio: FakeTwilio, smtp: SmtpSink) -> Settings:
    """What is sent, not how long a provider may take: on a CI machine starved by four legs
    both SMS of a test here waited past the 2 s timeout of the other dispatch tests (the
    fake Twilio read one request after its client had gone), and each counted a retry. The
    fault tests keep their own timeouts."""
    return make_settings(
        database_url, **{**notifier_settings(twilio, smtp), "twilio_timeout_s": 30.0}
    )


def alerts(db) -> list[Alert]:
    db.expire_all()
    return list(db.scalars(select(Alert).order_by(Alert.id)))


def test_one_alert_per_citizen_per_channel_in_korean(api, consul, db, dispatcher, twilio, smtp):
    register(api, location=TOKYO, phone="010-5555-0001", email="a@example.com")
    register(api, location=TOKYO, phone="010-5555-0002", email="b@example.com", language="en")
    register(api, location={"lat": 37.5, "lon": 127.0}, phone="010-5555-0003")  # Seoul
    created = api.post("/v1/advisories", json=advisory_body(), headers=consul)
    assert created.status_code == 201

    first = dispatcher.drain()
    again = dispatcher.drain()  # nothing is sent twice

    assert first.by_status == {"sent": 4} and again.claimed == 0
    assert len(twilio.posts) == 2 and len(smtp.received) == 2
    [korean] = twilio.bodies_to("+821055550001")
    assert "도쿄 여행자제" in korean and "여행경보 2단계(여행자제)" in korean
    assert korean.startswith("[외교부 해외안전여행]")
    [english] = twilio.bodies_to("+821055550002")
    assert "Tokyo: reconsider travel" in english and "Level 2 (travel restraint)" in english
    [mail] = smtp.to("a@example.com")
    assert "도쿄 여행자제" in mail["Subject"]
    assert mail.get_body(("plain",)).get_content().count("불필요한 여행을 자제하십시오.") == 1
    assert "<h1>" in mail.get_body(("html",)).get_content()
    rows = alerts(db)
    assert {(r.channel, r.status) for r in rows} == {("sms", "sent"), ("email", "sent")}
    assert all(r.attempts == 1 and r.sent_at is not None for r in rows)
    sms = [r for r in rows if r.channel == "sms"]
    assert {r.provider_ref for r in sms} == {m["sid"] for m in twilio.messages}
    assert all(r.segments and r.segments >= 1 for r in sms)
    # Each message carries its alert's link and the Twilio callback names the alert.
    for row in sms:
        message = next(m for m in twilio.messages if m["sid"] == row.provider_ref)
        assert f"https://anjeon.test/a/{row.id}." in message["body"]
        assert message["status_callback"] == (
            f"https://anjeon.test/v1/webhooks/twilio/status?alert={row.id}&attempt=1"
        )
        assert int(message["validity_period"]) > 0
    [mail_row] = [r for r in rows if r.channel == "email" and r.citizen_id == sms[0].citizen_id]
    assert mail["Message-ID"].startswith(f"<{mail_row.id}.")


def test_staff_see_counts_and_rows(api, consul, db, dispatcher):
    register(api, location=TOKYO, phone="010-5555-0011", email="c@example.com")
    advisory = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    dispatcher.drain()
    view = api.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()
    assert view["counts"] == {"sent": {"sms": 1, "email": 1}} and view["total"] == 2
    contacts = {item["channel"]: item["contact"] for item in view["items"]}
    assert contacts == {"sms": "+82******0011", "email": "c***@example.com"}
    listed = api.get("/v1/alerts?status=sent", headers=consul).json()
    assert listed["total"] >= 2
    assert api.get("/v1/alerts?status=nonsense", headers=consul).status_code == 422


def test_revision_sends_update_and_cancel_sends_all_clear(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-5555-0021", channels=["sms"])
    advisory = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    dispatcher.drain()
    revised = api.patch(f"/v1/advisories/{advisory['id']}", json={"level": 3}, headers=consul)
    assert revised.status_code == 200
    dispatcher.drain()
    api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul)
    dispatcher.drain()
    first, update, cancel = twilio.bodies_to("+821055550021")
    assert "[변경]" not in first and "[변경]" in update and "3단계" in update
    assert "[해제]" in cancel and "해제되었습니다" in cancel
    # The all-clear does not repeat what the advisory told people to do.
    message = advisory["message"]["ko"]
    assert message in first and message not in cancel
    assert [r.revision for r in alerts(db)] == [1, 2, 3]
    # What staff read: one citizen told three times, each revision apart (summed, "sent 3"
    # of one citizen read as three people told).
    view = api.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()
    assert view["counts"] == {"sent": {"sms": 3}}
    assert view["by_revision"] == [
        {"revision": 3, "change": "cancelled", "counts": {"sent": {"sms": 1}}, "asks": {}},
        {"revision": 2, "change": "revised", "counts": {"sent": {"sms": 1}}, "asks": {}},
        {"revision": 1, "change": "issued", "counts": {"sent": {"sms": 1}}, "asks": {}},
    ]


def test_a_roll_calls_asks_count_apart_from_the_alerts(api, consul, dispatcher, twilio):
    """A review: the asks of a roll call (one more "are you safe?" to each citizen) were added
    to the revision's alerts, so one citizen asked again read as two people told."""
    register(api, location=TOKYO, phone="010-5555-0071", channels=["sms"])
    advisory = api.post("/v1/advisories", json=advisory_body(level=3), headers=consul).json()
    dispatcher.drain()
    started = api.post(f"/v1/advisories/{advisory['id']}/rollcall", headers=consul)
    assert started.status_code == 202, started.text
    dispatcher.drain()
    assert len(twilio.bodies_to("+821055550071")) == 2
    view = api.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()
    [revision] = view["by_revision"]
    assert revision["counts"] == {"sent": {"sms": 1}}
    assert revision["asks"] == {"sent": {"sms": 1}}
    assert view["counts"] == {"sent": {"sms": 2}}  # every row, as before


def test_a_cancellation_counts_its_all_clears_apart_from_the_warnings_never_sent(
    api, consul, dispatcher, twilio
):
    """Two citizens warned, a third's warning still queued when the advisory is cancelled:
    the warning's revision counts 2 sent and 1 expired, the all-clear's 2 sent (to the two
    told)."""
    for n in range(2):
        register(api, location=TOKYO, phone=f"010-5555-006{n}", channels=["sms"])
    advisory = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    dispatcher.drain()
    register(api, location=TOKYO, phone="010-5555-0062", channels=["sms"])
    swept = api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul)
    assert swept.status_code == 200, swept.text
    dispatcher.drain()
    view = api.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()
    revisions = {r["revision"]: (r["change"], r["counts"]) for r in view["by_revision"]}
    assert revisions == {
        2: ("cancelled", {"sent": {"sms": 2}}),
        1: ("issued", {"sent": {"sms": 2}, "expired": {"sms": 1}}),
    }
    assert view["counts"] == {"sent": {"sms": 4}, "expired": {"sms": 1}}
    assert len(twilio.bodies_to("+821055550062")) == 0


def test_pending_alerts_of_a_revised_advisory_are_superseded(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-5555-0031", channels=["sms"])
    advisory = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    api.patch(f"/v1/advisories/{advisory['id']}", json={"level": 3}, headers=consul)
    dispatcher.drain()
    assert [(r.revision, r.status) for r in alerts(db)] == [(1, "superseded"), (2, "sent")]
    assert len(twilio.posts) == 1


def test_cancelled_before_sending_sends_nothing(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-5555-0041", channels=["sms"])
    advisory = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul)
    dispatcher.drain()
    assert [r.status for r in alerts(db)] == ["expired"]
    assert twilio.posts == []


def test_details_link_shows_the_advisory_and_records_only_an_explicit_read(
    api, consul, db, dispatcher, twilio
):
    register(api, location=TOKYO, phone="010-5555-0051", channels=["sms"])
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    dispatcher.drain()
    [body] = twilio.bodies_to("+821055550051")
    link = body.rsplit(" ", 1)[1]
    path = link.removeprefix("https://anjeon.test")
    page = api.get(path)
    assert page.status_code == 200 and "도쿄 여행자제" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    # A link scanner or a message preview fetches the page: that is not the citizen reading.
    [row] = alerts(db)
    assert row.opened_at is None and '<form method="post">' in page.text
    confirmed = api.post(path)
    assert confirmed.status_code == 200 and "확인하셨습니다" in confirmed.text
    [row] = alerts(db)
    assert row.opened_at is not None
    forged = path[:-1] + ("0" if path[-1] != "0" else "1")
    assert api.get(forged).status_code == 404
    assert api.post(forged).status_code == 404


class _After(DatabaseClock):
    """The dispatcher's clock from the send on: past the advisory's end."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        self.at = at

    def now(self) -> datetime:
        return self.at


def test_a_warning_whose_advisory_ended_while_its_batch_waited_is_not_sent(
    api, consul, db, dispatcher, twilio
):
    """Found by a probe: a slow provider held a batch past its advisory's end, and 316 of 600
    warnings went out up to 26 s after it, each recorded as sent. The end is checked again
    right before each send: the row is not sent, and the next claim ends it as expired."""
    _sms_citizen_in_tokyo(api)
    t0 = utcnow()
    ends = t0 + timedelta(hours=1)
    body = advisory_body(expires=ends.isoformat())
    assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
    dispatcher.clock = _After(ends + timedelta(seconds=1))
    dispatcher.step(now=t0)  # claimed in time, its send's turn came after the end
    assert twilio.messages == []
    dispatcher.step(now=ends + timedelta(seconds=2))
    db.expire_all()
    [row] = alerts(db)
    assert row.status == "expired" and row.sent_at is None, (row.status, row.last_error)
    assert twilio.messages == []


def test_the_heartbeat_stops_a_held_warning_once_its_advisory_ended(api, consul, db):
    _sms_citizen_in_tokyo(api)
    ends = utcnow() + timedelta(hours=1)
    body = advisory_body(expires=ends.isoformat())
    assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
    [row] = alerts(db)
    assert overtaken(db, ids=[row.id], now=ends - timedelta(seconds=1)) == set()
    assert overtaken(db, ids=[row.id], now=ends) == {row.id}


def _a_warning_whose_try_was_lost(api, consul, db) -> tuple[dict, Alert]:
    """An advisory (as created) and its one warning, whose send's answer was lost: waiting to
    be tried again, looked up first."""
    _sms_citizen_in_tokyo(api)
    created = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    [row] = alerts(db)
    db.execute(
        update(Alert)
        .where(Alert.id == row.id)
        .values(status="retry_wait", outcome_unknown=True, attempts=1)
    )
    return created, row


def _sms_citizen_in_tokyo(api) -> None:
    register(api, location={"lat": 35.68, "lon": 139.69}, channels=["sms"], email=None)


def test_a_warning_whose_try_was_lost_and_then_cancelled_counts_as_maybe_sent(
    api, consul, db, dispatcher
):
    """Found by a probe: warnings whose send's answer was lost (the dispatcher stopped) were
    ended by the cancel as "cancelled before this was sent", and staff read 129 warned where
    157 had been. They now say they may have gone, and count apart as maybe_sent."""
    created, row = _a_warning_whose_try_was_lost(api, consul, db)
    cancelled = api.post(f"/v1/advisories/{created['id']}/cancel", headers=consul)
    assert cancelled.status_code == 200, cancelled.text
    db.expire_all()
    warning = db.get(Alert, row.id)
    assert warning.status == "expired" and warning.outcome_unknown
    assert "may have been sent" in warning.last_error
    seen = api.get(f"/v1/advisories/{created['id']}/alerts", headers=consul).json()
    [issued] = [r for r in seen["by_revision"] if r["change"] == "issued"]
    assert issued["counts"] == {"expired": {"sms": 1}, "maybe_sent": {"sms": 1}}
    # The all-clear goes to them: they may have been warned.
    [cancel] = [r for r in seen["by_revision"] if r["change"] == "cancelled"]
    assert cancel["counts"] == {"pending": {"sms": 1}}


def test_a_lost_try_superseded_at_its_next_claim_says_it_may_have_gone(
    api, consul, db, dispatcher, twilio
):
    created, row = _a_warning_whose_try_was_lost(api, consul, db)
    changed = {"message": {"ko": "고친 안내", "en": "Corrected"}}
    revised = api.patch(f"/v1/advisories/{created['id']}", json=changed, headers=consul)
    assert revised.status_code == 200, revised.text
    dispatcher.drain()
    db.expire_all()
    first = db.get(Alert, row.id)
    assert first.status == "superseded" and first.outcome_unknown
    assert "revision 2 replaced it" in first.last_error
    assert "may have been sent" in first.last_error
    assert len(twilio.messages) == 1  # the revision's own
