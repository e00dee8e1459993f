"""Failures on both backends: retried with backoff, honoured Retry-After, final at once,
fallback to the other channel, unknown outcomes reconciled, expiry and erasure."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from service.advisories.models import Advisory
from service.citizens.models import Citizen
from service.citizens.service import purge_unverified
from service.db import utcnow
from service.dispatch import dispatcher as dispatcher_module
from service.dispatch.models import NotifierCircuit
from service.dispatch.workers import Heartbeat, Holdings, SendRate
from service.ledger import notices, outbox
from service.ledger.models import Alert
from service.ledger.outbox import Decision
from service.privacy import PersonalDataVault
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.fake_twilio import Answer
from tests.dispatch.test_status_webhook import callback
from tests.operations.service_process import wait_until

TOKYO = {"lat": 35.5, "lon": 139.5}
# A create whose answer is lost: Twilio stalls well past the client's timeout, and the timeout
# leaves the look-up that follows time to answer on a busy machine.
LOST_ANSWER_TIMEOUT_S = 1.5
LOST_ANSWER_STALL_S = 6.0


def rows(db, channel: str | None = None) -> list[Alert]:
    db.expire_all()
    query = select(Alert).order_by(Alert.id)
    if channel:
        query = query.where(Alert.channel == channel)
    return list(db.scalars(query))


def issue(api, consul, **overrides) -> dict:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()


def drain_until_settled(dispatcher, db, *, rounds: int = 50) -> None:
    """Step through backoffs on a moving clock: each round is a minute later."""
    now = utcnow()
    for _ in range(rounds):
        dispatcher.step(now=now)
        if not any(r.status in ("pending", "retry_wait", "claimed") for r in rows(db)):
            return
        now += timedelta(minutes=1)
    raise AssertionError("alerts still open")


def test_500_three_times_then_201_is_sent_once_with_backoff(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-6666-0001", channels=["sms"])
    twilio.script("+821066660001", Answer(500), Answer(500), Answer(500))
    issue(api, consul)
    start = utcnow()
    dispatcher.step(now=start)
    [row] = rows(db)
    # Backoff: the retry is scheduled later, and a 5xx might have sent: look it up first.
    assert row.status == "retry_wait" and row.due_at > start and row.outcome_unknown
    assert row.error_code == "500"
    drain_until_settled(dispatcher, db)
    [row] = rows(db)
    assert row.status == "sent" and row.attempts == 4
    assert len(twilio.posts) == 4 and len(twilio.messages) == 1
    assert len(twilio.lists) == 3  # each resend was preceded by a look-up
    assert callback(api, row, "delivered").status_code == 204  # Twilio's delivery report
    [row] = rows(db)
    assert row.status == "delivered" and row.delivered_at is not None


def test_429_retry_after_is_honoured(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-6666-0002", channels=["sms"])
    twilio.script("+821066660002", Answer(429, code=20429, retry_after="2"))
    issue(api, consul)
    start = utcnow()
    dispatcher.step(now=start)
    [row] = rows(db)
    assert row.status == "retry_wait" and row.due_at >= start + timedelta(seconds=2)
    assert not row.outcome_unknown  # a 429 was refused, not sent
    dispatcher.step(now=start + timedelta(seconds=1.5))  # the channel is paused: nothing goes
    assert len(twilio.posts) == 1
    dispatcher.step(now=start + timedelta(seconds=2.5))
    [row] = rows(db)
    assert row.status == "sent" and len(twilio.posts) == 2 and twilio.lists == []


def test_a_retry_after_of_an_hour_pauses_the_channel_a_minute_at_most(
    api, consul, db, dispatcher, twilio
):
    """A review: a provider's Retry-After paused the whole channel for as long as it said, a
    level 4 too; an hour's (a provider's fault, a hostile relay's) held every warning for an
    hour. It pauses a minute at most."""
    register(api, location=TOKYO, phone="010-6666-0017", channels=["sms"])
    twilio.script("+821066660017", Answer(429, code=20429, retry_after="3600"))
    issue(api, consul, level=4)
    start = utcnow()
    dispatcher.step(now=start)
    [row] = rows(db)
    assert row.status == "retry_wait"
    assert start + timedelta(seconds=59) <= row.due_at <= start + timedelta(seconds=61)
    dispatcher.step(now=start + timedelta(seconds=61))
    [row] = rows(db)
    assert row.status == "sent" and len(twilio.posts) == 2


def test_invalid_number_fails_at_once_and_falls_back_to_email(
    api, consul, db, dispatcher, twilio, smtp
):
    register(api, location=TOKYO, phone="010-6666-0003", email="fb@example.com", channels=["sms"])
    twilio.script("+821066660003", Answer(400, code=21211))
    issue(api, consul)
    dispatcher.drain()
    sms, email = rows(db, "sms"), rows(db, "email")
    assert [(r.status, r.attempts, r.error_code) for r in sms] == [("failed", 1, "21211")]
    assert len(twilio.posts) == 1
    assert [(r.status, r.fallback_of) for r in email] == [("sent", sms[0].id)]
    assert len(smtp.to("fb@example.com")) == 1


def test_smtp_451_is_retried_and_550_fails(api, consul, db, dispatcher, smtp):
    register(api, location=TOKYO, email="soft@example.com", channels=["email"], phone=None)
    register(api, location=TOKYO, email="hard@example.com", channels=["email"], phone=None)
    smtp.script("soft@example.com", "451 4.3.0 try again later")
    smtp.script("hard@example.com", "550 5.1.1 no such user")
    issue(api, consul)
    drain_until_settled(dispatcher, db)
    result = {r.attempts: (r.status, r.error_code) for r in rows(db)}
    assert result == {2: ("sent", None), 1: ("failed", "550")}
    soft = next(r for r in rows(db) if r.status == "sent")
    assert soft.last_error.startswith("451")  # the history of the retry is kept
    assert len(smtp.to("soft@example.com")) == 1 and smtp.to("hard@example.com") == []
    assert smtp.attempts.count("soft@example.com") == 2


def test_timeout_after_accept_is_reconciled_never_resent(
    api, consul, db, database_url, twilio, smtp
):
    """The message is still in Twilio's queue (no date_sent yet): the look-up must find it all
    the same. Filtered on DateSent, as it was until a probe asked, it would have missed it."""
    notifiers = {**notifier_settings(twilio, smtp), "twilio_timeout_s": LOST_ANSWER_TIMEOUT_S}
    settings = make_settings(database_url, **notifiers)
    dispatcher = dispatcher_in(db, settings)
    register(api, location=TOKYO, phone="010-6666-0004", channels=["sms"])
    twilio.script("+821066660004", Answer(stall_s=LOST_ANSWER_STALL_S))
    issue(api, consul)
    start = utcnow()
    dispatcher.step(now=start)
    [row] = rows(db)
    assert row.status == "retry_wait" and row.outcome_unknown
    dispatcher.step(now=start + timedelta(minutes=5))
    dispatcher.close()
    [row] = rows(db)
    assert row.status == "sent" and row.provider_ref == twilio.messages[0]["sid"]
    assert len(twilio.posts) == 1 and len(twilio.lists) == 1


def test_each_sms_is_marked_before_it_goes_with_when_its_outcome_will_be_known(
    api, consul, db, database_url, twilio, smtp
):
    """outbox.mark_sending through the dispatcher: the row's settles_at is the send's window
    (a quarter lease) plus the settle time, ANJEON_TWILIO_SETTLE_S when set (twice the
    timeout otherwise); an e-mail (SMTP: no settle time) is not marked."""
    default = dispatcher_in(db, make_settings(database_url, **notifier_settings(twilio, smtp)))
    assert default.notifiers["sms"].settle_s == 2 * default.notifiers["sms"].timeout_s
    default.close()
    settings = make_settings(database_url, **notifier_settings(twilio, smtp), twilio_settle_s=7)
    dispatcher = dispatcher_in(db, settings)
    register(api, location=TOKYO, phone="010-6666-0018", email="mark@example.com")
    issue(api, consul)
    before = utcnow()
    dispatcher.step()
    after = utcnow()
    dispatcher.close()
    marked = {row.channel: row for row in rows(db)}
    assert {row.status for row in marked.values()} == {"sent"}
    ahead = timedelta(seconds=settings.dispatch_lease_s / 4 + 7)
    settles_at = marked["sms"].settles_at
    assert settles_at is not None and before + ahead <= settles_at <= after + ahead
    assert marked["email"].settles_at is None


@pytest.mark.parametrize("fault", ["refused", "too late"])
def test_a_send_whose_mark_failed_or_came_too_late_does_not_go_and_is_not_a_try(
    api, consul, db, database_url, twilio, smtp, monkeypatch, fault
):
    """No send begins without a mark that covers it: when the ledger refuses the mark (the
    database away), or the mark's write outlasts its window (SQLite's write lock held by a
    bulk insert), the send waits, recorded as not tried, and goes on the next claim."""
    settings = make_settings(database_url, **notifier_settings(twilio, smtp), dispatch_lease_s=1.0)
    dispatcher = dispatcher_in(db, settings)
    register(api, location=TOKYO, phone="010-6666-0019", channels=["sms"])
    issue(api, consul)
    mark = outbox.mark_sending

    def failing_once(session, **kwargs):
        monkeypatch.setattr(outbox, "mark_sending", mark)
        if fault == "refused":
            raise OperationalError("UPDATE alert", {}, Exception("connection refused"))
        time.sleep(settings.dispatch_lease_s / 4 + 0.1)  # past the window
        return mark(session, **kwargs)

    monkeypatch.setattr(outbox, "mark_sending", failing_once)
    before = utcnow()
    dispatcher.step(now=before)
    [row] = rows(db)
    assert twilio.posts == []
    assert row.status == "retry_wait" and row.error_code == "send-skipped"
    assert row.attempts - row.retry_base == 0  # given back: not a try
    # Claimed again after a moment, not at once: each go costs two writes.
    assert row.due_at >= before + timedelta(seconds=1)
    dispatcher.step(now=row.due_at)
    dispatcher.close()
    [row] = rows(db)
    assert row.status == "sent" and len(twilio.posts) == 1


def test_after_a_refused_mark_the_rest_of_its_task_waits_without_a_mark_of_its_own(
    api, consul, db, database_url, twilio, smtp, monkeypatch
):
    """A mark refused (the database away, its locks held) holds the task's other sends back
    for a moment, each recorded as not tried: each trying a mark of its own waited up to half
    a window for the same locks (a review)."""
    settings = make_settings(database_url, **notifier_settings(twilio, smtp), dispatch_threads=1)
    dispatcher = dispatcher_in(db, settings)
    for i in range(8):  # one thread: tasks of two sends
        register(api, location=TOKYO, phone=f"010-6666-{30 + i:04d}", channels=["sms"])
    issue(api, consul)
    mark = outbox.mark_sending
    named: list[list[int]] = []

    def refusing_the_first(session, **kwargs):
        named.append(sorted(kwargs["held"]))
        if len(named) == 1:
            raise OperationalError("UPDATE alert", {}, Exception("lock timeout"))
        return mark(session, **kwargs)

    monkeypatch.setattr(outbox, "mark_sending", refusing_the_first)
    dispatcher.step()
    dispatcher.close()
    skipped = sorted(row.id for row in rows(db) if row.error_code == "send-skipped")
    assert len(named[0]) == 2 and skipped == named[0]
    assert len(twilio.posts) == 8 - 2


def test_a_mark_names_only_the_sends_its_window_can_begin(db, database_url, twilio, smtp):
    """At a paced sender's rate, or at the pace the provider answers, a mark names fewer than
    a whole pool task: those it does not name are taken back at once after a crash."""
    paced = dispatcher_in(
        db, make_settings(database_url, **{**notifier_settings(twilio, smtp), "twilio_mps": 1})
    )
    notifier = paced.notifiers["sms"]
    window_s = paced.policy.send_margin_s
    assert paced.sends_in(window_s, "sms", notifier) == 1
    paced.close()
    free = dispatcher_in(
        db, make_settings(database_url, **{**notifier_settings(twilio, smtp), "twilio_mps": 0})
    )
    notifier = free.notifiers["sms"]
    assert free.sends_in(window_s, "sms", notifier) == 16  # a whole task
    free.observed_send("sms", window_s / 5)
    assert free.sends_in(window_s, "sms", notifier) == 5
    free.close()


def test_a_message_the_provider_creates_after_the_timeout_is_looked_up_after_it_never_resent(
    api, consul, db, database_url, twilio, smtp
):
    """Twilio acts on the request after the client gave up (seen in CI on a loaded fake): a
    look-up at once found nothing, and the alert went twice. The row waits the notifier's
    settle time (twice its timeout) before its look-up."""
    notifiers = {**notifier_settings(twilio, smtp), "twilio_timeout_s": LOST_ANSWER_TIMEOUT_S}
    dispatcher = dispatcher_in(db, make_settings(database_url, **notifiers))
    settle_s = 2 * LOST_ANSWER_TIMEOUT_S
    register(api, location=TOKYO, phone="010-6666-0017", channels=["sms"])
    # Created 1.5 s after the client's 1.5 s read timeout: within the settle time.
    twilio.script("+821066660017", Answer(creates_after_s=2 * LOST_ANSWER_TIMEOUT_S))
    issue(api, consul)
    dispatcher.step()  # on the clock: the settle time counts from when the try ended
    gave_up = utcnow()
    [row] = rows(db)
    assert row.status == "retry_wait" and row.outcome_unknown and twilio.messages == []
    assert row.due_at >= gave_up + timedelta(seconds=settle_s - 1)  # not the 0.01 s backoff
    dispatcher.step()  # the backoff alone has passed: nothing is asked or sent
    assert len(twilio.posts) == 1 and twilio.lists == []
    assert wait_until(lambda: len(twilio.messages) == 1, 10)  # Twilio acts, late
    dispatcher.step(now=gave_up + timedelta(seconds=settle_s))
    dispatcher.close()
    [row] = rows(db)
    assert row.status == "sent" and row.provider_ref == twilio.messages[0]["sid"]
    assert len(twilio.posts) == 1 and len(twilio.lists) == 1


def _unknown_then_step(api, consul, db, database_url, twilio, smtp, phone: str, **advisory):
    """A create answered 500 (Twilio may have made it) by a notifier whose settle time is a
    minute (a 30 s timeout): the dispatcher, the row and when the try ended."""
    notifiers = {**notifier_settings(twilio, smtp), "twilio_timeout_s": 30.0}
    dispatcher = dispatcher_in(db, make_settings(database_url, **notifiers))
    register(api, location=TOKYO, phone=phone, channels=["sms"])
    twilio.script("+82" + phone.replace("-", "")[1:], Answer(500))
    issue(api, consul, **advisory)
    start = utcnow()
    dispatcher.step(now=start)
    [row] = rows(db)
    assert row.status == "retry_wait" and row.outcome_unknown, row.last_error
    return dispatcher, row, start


def test_the_settle_time_never_pushes_a_retry_past_the_advisory_end(
    api, consul, db, database_url, twilio, smtp
):
    """A review: the settle time (a minute here) pushed the look-up past an advisory ending in
    20 s, and the warning expired unsent, with no e-mail after it. It is tried a second before
    the end instead."""
    ends = utcnow() + timedelta(seconds=20)
    dispatcher, row, _ = _unknown_then_step(
        api, consul, db, database_url, twilio, smtp, "010-6666-0018", expires=ends.isoformat()
    )
    assert ends - timedelta(seconds=1.5) <= row.due_at <= ends - timedelta(seconds=0.5)
    dispatcher.step(now=row.due_at)
    dispatcher.close()
    [row] = rows(db)
    assert row.status == "sent" and len(twilio.posts) == 2 and len(twilio.lists) == 1


def test_after_a_failed_look_up_the_next_waits_the_backoff_not_the_settle_time(
    api, consul, db, database_url, twilio, smtp
):
    """The settle time is for a try's outcome to be made; a look-up that failed made nothing."""
    dispatcher, row, start = _unknown_then_step(
        api, consul, db, database_url, twilio, smtp, "010-6666-0019"
    )
    assert row.due_at >= start + timedelta(seconds=60)
    twilio.fault("5xx", count=1)  # the look-up's list
    dispatcher.step(now=row.due_at)
    dispatcher.close()
    [row] = rows(db)
    assert (row.status, row.error_code) == ("retry_wait", "lookup-failed")
    assert len(twilio.lists) == 1 and len(twilio.posts) == 1
    assert row.due_at < start + timedelta(seconds=61)  # the tests' backoff: 0.05 s at most


def test_a_staff_retry_of_a_try_whose_outcome_is_unknown_waits_the_settle_time(
    api, consul, db, database_url, twilio, smtp
):
    """Found by a probe: a consul's retry of an SMS that failed after a timeout was looked up
    at once, before Twilio had made the message, and it went twice (3 of 3)."""
    notifiers = {**notifier_settings(twilio, smtp), "twilio_timeout_s": 30.0}
    settings = make_settings(database_url, dispatch_max_attempts=1, **notifiers)
    dispatcher = dispatcher_in(db, settings)
    register(api, location=TOKYO, phone="010-6666-0020", channels=["sms"])
    twilio.script("+821066660020", Answer(500))
    issue(api, consul)
    dispatcher.step(now=utcnow())
    [row] = rows(db, "sms")
    assert (row.status, row.outcome_unknown) == ("failed", True)
    ended = row.updated_at
    assert api.post(f"/v1/alerts/{row.id}/retry", headers=consul).status_code == 200
    [row] = rows(db, "sms")
    # The API's own notifier gives the settle time: twice its Twilio timeout.
    settle_s = 2 * float(notifier_settings(twilio, smtp)["twilio_timeout_s"])  # type: ignore[arg-type]
    assert row.status == "pending" and row.due_at == ended + timedelta(seconds=settle_s)
    dispatcher.step(now=utcnow())  # not yet: nothing is asked or sent
    assert len(twilio.posts) == 1 and twilio.lists == []
    dispatcher.step(now=row.due_at)
    dispatcher.close()
    [row] = rows(db, "sms")
    assert row.status == "sent" and len(twilio.lists) == 1 and len(twilio.posts) == 2


def test_lapsed_claim_is_looked_up_before_any_resend(api, consul, db, dispatcher, twilio):
    """A dispatcher that died after Twilio accepted: the next one finds the message."""
    register(api, location=TOKYO, phone="010-6666-0005", channels=["sms"])
    issue(api, consul)
    dispatcher.drain()
    [row] = rows(db)
    # Rewind the row to "claimed by a dead worker, lease over" as a crash would leave it.
    db.execute(
        update(Alert)
        .where(Alert.id == row.id)
        .values(status="claimed", claimed_by="dead", due_at=utcnow() - timedelta(seconds=1))
    )
    dispatcher.drain()
    [row] = rows(db)
    assert row.status == "sent" and row.attempts == 2
    assert len(twilio.posts) == 1 and len(twilio.lists) == 1


def test_advisory_ended_before_sending_is_expired(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-6666-0006", channels=["sms"])
    advisory = issue(api, consul)
    db.execute(
        update(Advisory)
        .where(Advisory.public_id == advisory["id"])
        .values(expires=utcnow() + timedelta(minutes=1))
    )
    dispatcher.step(now=utcnow() + timedelta(minutes=2))
    assert [(r.status, r.last_error) for r in rows(db)] == [
        ("expired", "advisory ended before this was sent")
    ]
    assert twilio.posts == []


def test_retry_never_goes_past_the_advisory_end(api, consul, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-6666-0007", channels=["sms"])
    advisory = issue(api, consul)
    db.execute(
        update(Advisory)
        .where(Advisory.public_id == advisory["id"])
        .values(expires=utcnow() + timedelta(seconds=1))
    )
    twilio.script("+821066660007", Answer(429, code=20429, retry_after="30"))
    dispatcher.drain()
    [row] = rows(db)
    assert row.status == "expired" and row.last_error.startswith("advisory ends before the retry")
    assert len(twilio.posts) == 1


def test_erased_citizen_alerts_are_cancelled(api, consul, db, dispatcher, twilio):
    citizen_id, auth, _ = register(api, location=TOKYO, phone="010-6666-0008")
    issue(api, consul)
    assert api.delete(f"/v1/citizens/{citizen_id}", headers=auth).status_code == 204
    dispatcher.drain()
    assert {r.status for r in rows(db)} == {"cancelled"}
    assert twilio.posts == []


def test_a_contact_no_listed_data_secret_opens_fails_its_own_alert_only(
    api, consul, db, dispatcher, twilio
):
    """A review: one contact left under a dropped data secret (a rotation finished too soon)
    failed every batch that held it, and held up everyone in them. That alert fails, saying
    why, and the others go."""
    lost_id, _, _ = register(api, location=TOKYO, phone="010-6666-0031", channels=["sms"])
    register(api, location=TOKYO, phone="010-6666-0032", channels=["sms"])
    dropped = PersonalDataVault(b"a data secret no longer listed, 40 chars")
    db.execute(
        update(Citizen)
        .where(Citizen.public_id == lost_id)
        .values(phone_sealed=dropped.seal("phone", "+821066660031"))
    )
    issue(api, consul)
    dispatcher.drain()
    by_code = {r.error_code: r.status for r in rows(db)}
    assert by_code == {"unreadable": "failed", None: "sent"}
    assert twilio.bodies_to("+821066660031") == [] and len(twilio.bodies_to("+821066660032")) == 1


@pytest.mark.parametrize("where", ["message", "verdict"])
def test_an_alert_whose_preparation_raises_fails_alone_and_its_batch_goes(
    api, consul, db, dispatcher, twilio, smtp, monkeypatch, where
):
    """A review: a fault while one row was prepared (injected here; a template, a zone, a
    token in life) failed its whole batch, which lapsed and was claimed again, row and all:
    five level-4 SMS were never sent. That row fails, saying so, its e-mail goes instead, and
    the rest of the batch is sent."""
    register(
        api, location=TOKYO, phone="010-6666-0041", email="poison@example.com", channels=["sms"]
    )
    register(api, location=TOKYO, phone="010-6666-0042", channels=["sms"])
    register(api, location=TOKYO, phone="010-6666-0043", channels=["sms"])

    def faulty(real):
        def call(*args, **kw):
            if any(getattr(arg, "address", None) == "+821066660041" for arg in args):
                raise KeyError("injected: a fault in this citizen's alert")
            return real(*args, **kw)

        return call

    if where == "message":
        monkeypatch.setattr(dispatcher, "_render", faulty(dispatcher._render))
    else:
        monkeypatch.setattr(dispatcher_module, "_quiet", faulty(dispatcher_module._quiet))
    issue(api, consul)
    dispatcher.drain()
    sms = {r.citizen_id: r for r in rows(db, "sms")}
    assert sorted((r.status, r.error_code, r.attempts) for r in sms.values()) == [
        ("failed", "unprepared", 1),
        ("sent", None, 1),
        ("sent", None, 1),
    ]
    assert twilio.bodies_to("+821066660041") == []
    assert len(twilio.bodies_to("+821066660042")) == len(twilio.bodies_to("+821066660043")) == 1
    failed = next(r for r in sms.values() if r.status == "failed")
    assert [(r.status, r.fallback_of) for r in rows(db, "email")] == [("sent", failed.id)]
    assert len(smtp.to("poison@example.com")) == 1


def test_staff_retry_requeues_a_failed_alert(api, consul, staff_headers, db, dispatcher, twilio):
    register(api, location=TOKYO, phone="010-6666-0009", email=None, channels=["sms"])
    # Region not enabled: the operator enables it, then retries (a 21610 is the number's STOP).
    twilio.script("+821066660009", Answer(400, code=21408))
    issue(api, consul)
    dispatcher.drain()
    failed = api.get("/v1/alerts?status=failed", headers=consul).json()
    assert failed["total"] == 1 and failed["items"][0]["error_code"] == "21408"
    alert_id = failed["items"][0]["id"]
    viewer = staff_headers("viewer")
    assert api.post(f"/v1/alerts/{alert_id}/retry", headers=viewer).status_code == 403
    retried = api.post(f"/v1/alerts/{alert_id}/retry", headers=consul)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    dispatcher.drain()
    assert [r.status for r in rows(db)] == ["sent"]
    again = api.post(f"/v1/alerts/{alert_id}/retry", headers=consul)
    assert again.status_code == 409 and "sent" in again.json()["detail"]
    assert api.post("/v1/alerts/999999999/retry", headers=consul).status_code == 404


def test_an_advisorys_page_lists_what_failed_however_old_by_status(
    api, consul, db, dispatcher, twilio
):
    """The console lists the alerts that reached nobody by asking for them by status: the
    oldest failure of a large send, behind any number of newer alerts, is on the first page."""
    register(api, location=TOKYO, phone="010-6666-0010", email=None, channels=["sms"])
    for n in range(11, 14):
        register(api, location=TOKYO, phone=f"010-6666-00{n}", email=None, channels=["sms"])
    twilio.script("+821066660010", Answer(400, code=21610))
    advisory = issue(api, consul)
    dispatcher.drain()
    # The failed one, registered first, is the oldest alert: a page of the newest misses it.
    url = f"/v1/advisories/{advisory['id']}/alerts"
    newest = api.get(f"{url}?limit=1", headers=consul).json()
    assert newest["total"] == 4 and newest["items"][0]["status"] == "sent"
    wanted = "status=failed&status=undelivered&status=expired"
    listed = api.get(f"{url}?limit=1&{wanted}", headers=consul).json()
    assert listed["total"] == 1 and listed["items"][0]["error_code"] == "21610"
    assert listed["counts"] == {"failed": {"sms": 1}, "sent": {"sms": 3}}  # counts cover all
    bad = api.get(f"{url}?status=failed&status=lost", headers=consul)
    assert bad.status_code == 422 and "status" in bad.text
    many = api.get(f"{url}?{'&'.join(['status=failed'] * 50)}", headers=consul)
    assert many.status_code == 422 and "status" in many.text


def _accepted_but_unanswered(api, consul, db, database_url, twilio, smtp, phone: str):
    """An SMS Twilio took whose answer was lost: its row waits to be looked up."""
    notifiers = {**notifier_settings(twilio, smtp), "twilio_timeout_s": LOST_ANSWER_TIMEOUT_S}
    settings = make_settings(database_url, **notifiers)
    dispatcher = dispatcher_in(db, settings)
    register(api, location=TOKYO, phone=phone, channels=["sms"])
    twilio.script("+82" + phone.replace("-", "")[1:], Answer(stall_s=LOST_ANSWER_STALL_S))
    advisory = issue(api, consul)
    dispatcher.step(now=utcnow())
    [row] = rows(db)
    assert row.status == "retry_wait" and row.outcome_unknown and len(twilio.messages) == 1
    return dispatcher, advisory, row


def test_a_warning_whose_answer_was_lost_gets_the_all_clear_when_cancelled(
    api, consul, db, database_url, twilio, smtp
):
    """Found by a fault probe: Twilio took 13 level-3 warnings whose answers were lost, staff
    cancelled while those rows waited to be looked up, and the 13 never got the all-clear."""
    dispatcher, advisory, _ = _accepted_but_unanswered(
        api, consul, db, database_url, twilio, smtp, "010-6666-0008"
    )
    assert api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul).status_code == 200
    dispatcher.step(now=utcnow() + timedelta(minutes=5))
    dispatcher.close()
    warning, all_clear = twilio.bodies_to("+821066660008")
    assert "[해제]" not in warning and "[해제]" in all_clear
    assert [(r.revision, r.status) for r in rows(db)] == [(1, "expired"), (2, "sent")]


def test_an_all_clear_waits_out_the_settle_time_of_a_warning_twilio_may_still_make(
    api, consul, db, database_url, twilio, smtp
):
    """Found by a probe: Twilio made a warning after the client's timeout, staff cancelled
    meanwhile, and the all-clear went at once: every citizen got the all-clear first and the
    warning after it (8 of 8). The all-clear now waits until the warning's try has settled."""
    notifiers = {**notifier_settings(twilio, smtp), "twilio_timeout_s": LOST_ANSWER_TIMEOUT_S}
    dispatcher = dispatcher_in(db, make_settings(database_url, **notifiers))
    register(api, location=TOKYO, phone="010-6666-0021", channels=["sms"])
    # Made 1.5 s after the client gave up: within the settle time (3 s).
    twilio.script("+821066660021", Answer(creates_after_s=2 * LOST_ANSWER_TIMEOUT_S))
    advisory = issue(api, consul)
    dispatcher.step()
    [warning] = rows(db)
    assert warning.status == "retry_wait" and warning.outcome_unknown
    assert api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul).status_code == 200
    dispatcher.step()  # the all-clear, while the warning may still be made
    all_clear = rows(db)[1]
    assert (all_clear.status, all_clear.last_error) == (
        "retry_wait",
        "waits for the warning still on its way",
    )
    assert all_clear.due_at > warning.due_at
    assert wait_until(lambda: len(twilio.messages) == 1, 10)  # the warning, made late
    dispatcher.step(now=all_clear.due_at)
    dispatcher.close()
    made_warning, made_all_clear = twilio.bodies_to("+821066660021")
    assert "[해제]" not in made_warning and "[해제]" in made_all_clear
    assert [(r.revision, r.status) for r in rows(db)] == [(1, "expired"), (2, "sent")]


def test_a_retry_by_staff_looks_up_the_try_that_may_have_gone_out(
    api, consul, db, database_url, twilio, smtp
):
    """Found by a fault probe: a row that ended failed after a try whose outcome was unknown
    lost that flag, and a consul's retry sent a second SMS of one Twilio had."""
    dispatcher, _, row = _accepted_but_unanswered(
        api, consul, db, database_url, twilio, smtp, "010-6666-0009"
    )
    db.execute(update(Alert).where(Alert.id == row.id).values(status="failed", due_at=None))
    retried = api.post(f"/v1/alerts/{row.id}/retry", headers=consul)
    assert retried.status_code == 200, retried.text
    dispatcher.step(now=utcnow() + timedelta(minutes=5))
    dispatcher.close()
    [row] = rows(db)
    assert row.status == "sent" and row.provider_ref == twilio.messages[0]["sid"]
    assert len(twilio.messages) == 1 and len(twilio.lists) == 1


def test_a_row_whose_look_ups_failed_ends_failed_marked_unknown_and_is_looked_up_on_retry(
    api, consul, db, dispatcher, twilio
):
    """Found by a fault probe: with Twilio's list failing after a create whose answer was a
    500, the row ended failed as if never sent although Twilio had the SMS, and a consul's
    retry sent it twice. It still ends (a review showed that holding it for ever kept the
    channel's circuit open for everyone), but marked unknown: the retry looks it up first."""
    register(api, location=TOKYO, phone="010-6666-0010", channels=["sms"])
    twilio.fault("5xx", count=12, created="always")  # the create, then 11 look-ups
    issue(api, consul)
    drain_until_settled(dispatcher, db, rounds=80)
    [row] = rows(db, "sms")  # its e-mail went instead (the fallback)
    assert (row.status, row.outcome_unknown, row.error_code) == ("failed", True, "lookup-failed")
    assert len(twilio.messages) == 1
    twilio.faults.clear()
    assert api.post(f"/v1/alerts/{row.id}/retry", headers=consul).status_code == 200
    drain_until_settled(dispatcher, db)
    [row] = rows(db, "sms")
    assert row.status == "sent" and row.provider_ref == twilio.messages[0]["sid"]
    assert len(twilio.messages) == 1 and len(twilio.posts) == 1


def test_claims_overtaken_by_a_cancellation_or_an_erasure_are_not_sent(
    api, consul, db, dispatcher, twilio
):
    """Found by a fault probe: a dispatcher read the advisory once per batch, so after staff
    cancelled a level 3, 84 warnings of the batch in hand still went out (some after the
    all-clear), and an erased citizen's too. The heartbeat's renewal now stops them; whoever
    claims them when the lease lapses ends them unsent, and the all-clear still goes."""
    people = [
        register(api, location=TOKYO, phone=f"010-6666-00{n}", channels=["sms"])
        for n in (11, 12, 13)
    ]
    advisory = issue(api, consul, level=3)
    now = utcnow()
    claimed = outbox.claim(db, channel="sms", now=now, limit=10, lease_s=10, worker="me")
    assert len(claimed) == 3
    holdings = Holdings()
    holdings.add(claimed, until=time.monotonic() + 10)
    factory = sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    beat = Heartbeat(factory, worker="me", lease_s=10, holdings=holdings, rates=SendRate())
    erased_id, erased_auth, _ = people[2]
    assert api.delete(f"/v1/citizens/{erased_id}", headers=erased_auth).status_code == 204
    beat.beat()
    erased = db.scalar(select(Citizen.id).where(Citizen.public_id == erased_id))
    sendable = {r.citizen_id: holdings.may_send(r, margin_s=2.5) for r in claimed}
    assert sendable == {r.citizen_id: r.citizen_id != erased for r in claimed}
    assert api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul).status_code == 200
    beat.beat()
    assert not any(holdings.may_send(r, margin_s=2.5) for r in claimed)
    # The lease lapses: the rows end unsent, and the two still registered get the all-clear.
    dispatcher.step(now=now + timedelta(seconds=30))
    ended = {(r.citizen_id, r.revision): r.status for r in rows(db)}
    assert ended[(erased, 1)] == "cancelled"
    assert sorted(s for (c, rev), s in ended.items() if rev == 1 and c != erased) == [
        "expired",
        "expired",
    ]
    assert [s for (c, rev), s in ended.items() if rev == 2 and c != erased] == ["sent", "sent"]
    assert all("[해제]" in m["body"] for m in twilio.messages) and len(twilio.messages) == 2


def test_an_all_clear_goes_to_nobody_whose_warning_was_given_up_at_the_cancellation(
    api, consul, db, dispatcher, twilio, monkeypatch
):
    """A warning claimed, then the advisory cancelled before the dispatcher read its state:
    the all-clear was queued (the warning was held, it may have been on its way), and the
    dispatcher gave the warning up. Before, the all-clear still went: "the advisory is lifted"
    to someone never told of it. Now it ends cancelled, saying why."""
    register(api, location=TOKYO, phone="010-6666-0015", channels=["sms"])
    advisory = issue(api, consul, level=3)
    read_states = dispatcher_module.advisory_states

    def cancelled_in_between(session, ids):
        if not cancelled:
            cancelled.append(api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul))
        return read_states(session, ids)

    cancelled: list = []
    monkeypatch.setattr(dispatcher_module, "advisory_states", cancelled_in_between)
    dispatcher.step()
    assert cancelled[0].status_code == 200, cancelled[0].text
    dispatcher.step()
    [warning, all_clear] = rows(db)
    assert (warning.revision, warning.status, warning.outcome_unknown) == (1, "expired", False)
    assert (all_clear.revision, all_clear.status) == (2, "cancelled")
    assert all_clear.last_error == notices.REASON_NEVER_WARNED
    assert twilio.posts == []


def test_an_all_clear_waits_for_the_warning_still_on_its_way(api, consul, db, dispatcher, twilio):
    """Another dispatcher holds the warning at the cancellation: the all-clear waits (not a
    try), and goes once that one has recorded its warning as sent, after it."""
    register(api, location=TOKYO, phone="010-6666-0016", channels=["sms"])
    advisory = issue(api, consul, level=3)
    now = utcnow()
    [held] = outbox.claim(db, channel="sms", now=now, limit=10, lease_s=10, worker="other")
    assert api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul).status_code == 200
    dispatcher.step(now=now)
    [_, all_clear] = rows(db)
    assert (all_clear.status, all_clear.last_error) == (
        "retry_wait",
        "waits for the warning still on its way",
    )
    assert all_clear.attempts - all_clear.retry_base == 0  # given back: a wait is not a try
    # Until the warning's claim comes due (its lease end), not asked about every few seconds.
    assert abs((all_clear.due_at - (now + timedelta(seconds=11))).total_seconds()) < 1
    assert twilio.posts == []
    sent = Decision(held.id, "sent", provider_ref="SMother")
    outbox.record(db, decided=[(held, sent)], worker="other", now=now)
    dispatcher.step(now=now + timedelta(seconds=11))
    [warning, all_clear] = rows(db)
    assert (warning.status, all_clear.status) == ("sent", "sent")
    [message] = twilio.messages
    assert "[해제]" in message["body"]


def _warned_by_sms_then_cancelled(api, consul, db, dispatcher, phone: str, email: str) -> dict:
    """A citizen who chose SMS and gave an e-mail, warned by SMS (level 4); the advisory then
    cancelled. Returns the advisory."""
    register(api, location=TOKYO, phone=phone, email=email, channels=["sms"])
    advisory = issue(api, consul, level=4)
    dispatcher.drain()
    assert [r.status for r in rows(db, "sms")] == ["sent"]
    return advisory


def _cancel(api, consul, advisory: dict) -> None:
    assert api.post(f"/v1/advisories/{advisory['id']}/cancel", headers=consul).status_code == 200


@pytest.mark.parametrize("since", ["number gone", "STOP"])
def test_the_e_mail_fallback_of_an_all_clear_goes_to_whoever_the_sms_warned(
    api, consul, db, dispatcher, twilio, smtp, since
):
    """Found by a review: an all-clear on the other channel (the fallback of one whose SMS
    failed: a number gone, a STOP since) looked only for a warning on its own channel, found
    none, and was dropped as "never warned"; the citizen warned by SMS never heard it lifted."""
    advisory = _warned_by_sms_then_cancelled(
        api, consul, db, dispatcher, "010-6666-0018", "lifted@example.com"
    )
    if since == "STOP":
        db.execute(update(Citizen).values(sms_opted_out_at=utcnow()))
    else:
        twilio.script("+821066660018", Answer(400, code=21211))
    _cancel(api, consul, advisory)
    dispatcher.drain()
    [email] = rows(db, "email")
    assert (email.revision, email.status) == (2, "sent"), email.last_error
    [lifted] = smtp.to("lifted@example.com")
    assert "[해제]" in str(lifted["Subject"]) or "해제" in lifted.get_body(("plain",)).get_content()


def test_an_all_clear_diverted_while_the_sms_circuit_is_open_goes_by_e_mail(
    api, consul, db, dispatcher, smtp
):
    """The SMS provider down at the cancellation of a level 4: its all-clear goes by e-mail
    meanwhile, as the warning would have (the review found it dropped as "never warned")."""
    advisory = _warned_by_sms_then_cancelled(
        api, consul, db, dispatcher, "010-6666-0020", "divert@example.com"
    )
    _cancel(api, consul, advisory)
    now = utcnow()
    circuit = dispatcher.circuits["sms"]
    circuit.ensure_row(db, now=now)
    row = db.get(NotifierCircuit, circuit.notifier)
    row.state, row.opened, row.open_until, row.changed_at = (
        "open",
        1,
        now + timedelta(minutes=5),
        now,
    )
    db.flush()
    dispatcher.step(now=now)
    dispatcher.step(now=now)
    [email] = rows(db, "email")
    assert (email.revision, email.status) == (2, "sent"), email.last_error
    assert len(smtp.to("divert@example.com")) == 1


def test_an_all_clear_waits_for_the_warning_on_its_own_channel_whatever_the_other_did(
    api, consul, db, dispatcher, smtp
):
    """A review: once an all-clear looked on either channel, an SMS warning sent let the
    e-mail all-clear go at once while another dispatcher still held the e-mail warning: the
    "lifted" mail could arrive before the warning it lifts. Its own channel decides first."""
    register(
        api,
        location=TOKYO,
        phone="010-6666-0021",
        email="both@example.com",
        channels=["sms", "email"],
    )
    advisory = issue(api, consul, level=3)
    now = utcnow()
    outbox.claim(db, channel="email", now=now, limit=10, lease_s=60, worker="other")
    dispatcher.step(now=now)  # the SMS warning goes
    assert [r.status for r in rows(db, "sms")] == ["sent"]
    _cancel(api, consul, advisory)
    dispatcher.step(now=now)
    warning, all_clear = rows(db, "email")
    assert (warning.status, all_clear.status) == ("claimed", "retry_wait")
    assert smtp.to("both@example.com") == []


def test_no_provider_id_comes_back_after_an_erasure(api, consul, db, dispatcher, twilio):
    """Found by a review: erasure cleared the provider's message id, and Twilio's "delivered"
    report wrote it back; so did a send in hand at the erasure, recorded afterwards."""
    citizen_id, auth, _ = register(api, location=TOKYO, phone="010-6666-0014", channels=["sms"])
    issue(api, consul, level=3)
    dispatcher.drain()
    [row] = rows(db, "sms")
    sid = row.provider_ref
    assert sid
    assert api.delete(f"/v1/citizens/{citizen_id}", headers=auth).status_code == 204
    [row] = rows(db, "sms")
    assert row.provider_ref is None
    assert callback(api, row, "delivered", sid=sid).status_code < 300
    [row] = rows(db, "sms")
    assert (row.status, row.provider_ref) == ("delivered", None)
    # As a send in hand at the erasure, recorded afterwards: its id, or its refusal (which
    # quotes the number, scrubbed but still the provider's words about them: a review).
    refused = "400 Unable to create record: scripted 400 for 'To' [contact]"
    db.execute(update(Alert).where(Alert.id == row.id).values(provider_ref=sid, last_error=refused))
    purge_unverified(db, now=utcnow(), ttl_h=24)  # the hourly job
    [row] = rows(db, "sms")
    assert (row.provider_ref, row.last_error) == (None, None)
