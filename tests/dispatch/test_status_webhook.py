"""Delivery reports: Twilio's callbacks signed against the public URL, repeatable, never
backwards, counted only for the send they name; and a plugin's own reports."""

from urllib.parse import urlencode

from sqlalchemy import select, update
from twilio.request_validator import RequestValidator

from service.citizens.models import Citizen
from service.db import utcnow
from service.ledger import outbox
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in
from tests.dispatch.fake_twilio import AUTH_TOKEN, Answer
from tests.dispatch.test_notifiers import plugin_on_path

PUBLIC = "https://anjeon.test"


def sent_sms(api, consul, db, dispatcher, phone: str) -> Alert:
    register(api, location={"lat": 35.5, "lon": 139.5}, phone=phone, channels=["sms"])
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    dispatcher.drain()
    db.expire_all()
    [row] = db.scalars(select(Alert))
    assert row.status == "sent"
    return row


def callback(
    api,
    alert: Alert,
    status: str,
    *,
    signed: bool = True,
    attempt: int | None = None,
    sid: str | None = None,
    **extra: str,
):
    """A callback as Twilio sends it to the URL we gave for one send (alert and attempt)."""
    path = f"/v1/webhooks/twilio/status?alert={alert.id}&attempt={attempt or alert.attempts}"
    form = {
        "MessageSid": sid or alert.provider_ref,
        "MessageStatus": status,
        "AccountSid": "AC" + "0" * 32,
        **extra,
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(
            PUBLIC + path, form
        )
    return api.post(path, data=form, headers=headers)


def status_of(db, alert: Alert) -> Alert:
    db.expire_all()
    return db.get(Alert, alert.id)


def test_signed_callback_marks_delivered(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0001")
    response = callback(api, alert, "delivered")
    assert response.status_code == 204
    row = status_of(db, alert)
    assert row.status == "delivered" and row.delivered_at is not None


def test_unsigned_or_badly_signed_callback_is_refused(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0002")
    assert callback(api, alert, "delivered", signed=False).status_code == 403
    path = f"/v1/webhooks/twilio/status?alert={alert.id}"
    forged = api.post(
        path,
        data={"MessageSid": alert.provider_ref, "MessageStatus": "delivered"},
        headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    )
    assert forged.status_code == 403
    assert forged.headers["content-type"] == "application/problem+json"
    # A signature over other fields does not cover these ones.
    form = {"MessageSid": alert.provider_ref, "MessageStatus": "sent"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form)
    tampered = api.post(
        path,
        data={**form, "MessageStatus": "undelivered"},
        headers={"X-Twilio-Signature": signature},
    )
    assert tampered.status_code == 403
    assert status_of(db, alert).status == "sent"


def test_repeated_and_out_of_order_callbacks_never_move_back(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0003")
    for status in ("delivered", "delivered", "sent", "queued", "undelivered"):
        assert callback(api, alert, status).status_code == 204
        assert status_of(db, alert).status == "delivered"


def test_undelivered_keeps_the_error_code(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0004")
    callback(api, alert, "sending")
    callback(api, alert, "undelivered", ErrorCode="30003")
    row = status_of(db, alert)
    assert (row.status, row.error_code) == ("undelivered", "30003")
    assert "30003" in row.last_error


def test_a_callback_re_cut_across_the_url_and_a_field_name_is_refused(api, consul, db, dispatcher):
    """Found by a probe: the signature covers the URL and the fields joined with nothing
    between them, so "…?alert=12&attempt=1" + "AccountSid…" signs as "…?alert=1" +
    "2&attempt=1AccountSid…": a captured report re-cut so settled another alert (or this one
    without its attempt). A field name Twilio would never send is a 403."""
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0009")
    path = f"/v1/webhooks/twilio/status?alert={alert.id}&attempt={alert.attempts}"
    form = {"AccountSid": "AC" + "0" * 32, "MessageSid": alert.provider_ref}
    form["MessageStatus"] = "undelivered"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form)
    re_cut_path = f"/v1/webhooks/twilio/status?alert={alert.id}"
    re_cut = {
        f"&attempt={alert.attempts}{k}" if k == "AccountSid" else k: v for k, v in form.items()
    }
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.compute_signature(PUBLIC + re_cut_path, re_cut) == signature
    refused = api.post(
        re_cut_path,
        content=urlencode(re_cut),
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert refused.status_code == 403, refused.text
    assert status_of(db, alert).status == "sent"


def test_callback_for_another_message_changes_nothing(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0005")
    path = f"/v1/webhooks/twilio/status?alert={alert.id}"
    form = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form)
    assert api.post(path, data=form, headers={"X-Twilio-Signature": signature}).status_code == 204
    assert status_of(db, alert).status == "sent"


def test_late_report_of_the_first_send_does_not_settle_a_staff_retry(
    api, consul, db, dispatcher, twilio, staff_headers
):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0006")
    first_sid = alert.provider_ref
    callback(api, alert, "undelivered", ErrorCode="30003")
    assert status_of(db, alert).status == "undelivered"
    retried = api.post(f"/v1/alerts/{alert.id}/retry", headers=consul)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    row = status_of(db, alert)
    assert row.provider_ref is None and row.attempts == 1
    # Twilio's late "sent" for the first message arrives after the retry was queued.
    assert callback(api, row, "sent", attempt=1, sid=first_sid).status_code == 204
    assert status_of(db, alert).status == "pending"
    dispatcher.drain()
    resent = status_of(db, alert)
    assert resent.status == "sent" and resent.attempts == 2
    assert resent.provider_ref and resent.provider_ref != first_sid
    assert len(twilio.bodies_to("+821077770006")) == 2
    # More late news of the first message changes nothing; the second's own report counts.
    callback(api, resent, "delivered", attempt=1, sid=first_sid)
    assert status_of(db, alert).status == "sent"
    callback(api, resent, "delivered", attempt=2)
    assert status_of(db, alert).status == "delivered"


def lost_try(api, consul, db, dispatcher, phone: str) -> tuple[Alert, int, str]:
    """An alert whose first send Twilio took, then the worker died before it wrote that down
    (claimed, its lease over, no message id); with the try's attempt and message id."""
    first = sent_sms(api, consul, db, dispatcher, phone)
    made_by, sid = first.attempts, first.provider_ref
    db.execute(
        update(Alert)
        .where(Alert.id == first.id)
        .values(status="claimed", claimed_by="gone", provider_ref=None, due_at=utcnow())
    )
    db.commit()
    return first, made_by, sid


def claimed_again(db, *, lease_s: int = 60) -> None:
    """Another dispatcher claims the lost try's row, and is still looking its message up."""
    assert (
        len(outbox.claim(db, channel="sms", now=utcnow(), limit=10, lease_s=lease_s, worker="b"))
        == 1
    )
    db.commit()


def found_by_look_up(api, consul, db, dispatcher, twilio, phone: str) -> tuple[Alert, int]:
    """A lost try (lost_try): the next claim finds the message by look-up."""
    first, made_by, _ = lost_try(api, consul, db, dispatcher, phone)
    dispatcher.drain()
    found = status_of(db, first)
    assert (found.status, found.attempts) == ("sent", made_by + 1)
    assert len(twilio.posts) == 1 and len(twilio.lists) == 1  # found, not sent again
    assert found.provider_ref == twilio.messages[0]["sid"]
    return found, made_by


def test_reports_on_a_message_found_by_look_up_count(api, consul, db, dispatcher, twilio):
    """Found by a fault probe: Twilio calls back the URL a message was created with, which
    names the attempt that made it; the row found it under a later attempt and dropped every
    report, so it stayed "sent" for ever."""
    found, made_by = found_by_look_up(api, consul, db, dispatcher, twilio, "010-7777-0008")
    assert callback(api, found, "delivered", attempt=made_by).status_code == 204
    assert status_of(db, found).status == "delivered"


def test_a_queue_overflow_of_a_message_found_by_look_up_is_sent_again(
    api, consul, db, dispatcher, twilio
):
    found, made_by = found_by_look_up(api, consul, db, dispatcher, twilio, "010-7777-0009")
    dropped = found.provider_ref
    callback(api, found, "failed", attempt=made_by, ErrorCode="30001")
    assert status_of(db, found).status == "pending"
    # As when the sender's hold ends (test_provider_scale tells the hold itself).
    db.execute(update(Alert).where(Alert.id == found.id).values(due_at=utcnow()))
    db.commit()
    dispatcher._paused_until.clear()
    dispatcher.drain()
    assert len(twilio.bodies_to("+821077770009")) == 2
    # The dropped message's reports, late or repeated, do not touch the new send.
    again = status_of(db, found)
    assert again.status == "sent" and again.provider_ref != dropped
    callback(api, again, "failed", attempt=made_by, sid=dropped, ErrorCode="30001")
    callback(api, again, "delivered", attempt=made_by, sid=dropped)
    assert status_of(db, found).status == "sent"


def test_a_report_on_a_lost_try_counts_while_a_later_claim_looks_for_it(
    api, consul, db, dispatcher, twilio
):
    """A review: a report on the lost try that arrived while the next claim was still looking
    the message up (claimed, no message id, the attempt moved on) was dropped; the look-up then
    recorded "sent", and nothing moved the row again. The report shows the message was made:
    it counts, and the claim's own record finds the row settled."""
    first, made_by, sid = lost_try(api, consul, db, dispatcher, "010-7777-0010")
    claimed_again(db)
    row = status_of(db, first)
    assert (row.status, row.attempts, row.outcome_unknown) == ("claimed", made_by + 1, True)
    assert callback(api, row, "delivered", attempt=made_by, sid=sid).status_code == 204
    row = status_of(db, first)
    assert (row.status, row.provider_ref) == ("delivered", sid)
    dispatcher.drain()  # settled: nothing is sent again
    assert len(twilio.posts) == 1 and status_of(db, first).status == "delivered"


def test_a_report_on_an_earlier_try_does_not_settle_a_claim_that_lost_nothing(
    api, consul, db, dispatcher, twilio, staff_headers
):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0011")
    first_sid = alert.provider_ref
    assert callback(api, alert, "undelivered", ErrorCode="30003").status_code == 204
    assert status_of(db, alert).status == "undelivered"
    retried = api.post(f"/v1/alerts/{alert.id}/retry", headers=consul)
    assert retried.status_code == 200, retried.text
    assert len(outbox.claim(db, channel="sms", now=utcnow(), limit=10, lease_s=60, worker="b")) == 1
    db.commit()
    row = status_of(db, alert)
    assert (row.status, row.outcome_unknown) == ("claimed", False)
    callback(api, row, "sent", attempt=1, sid=first_sid)
    assert status_of(db, alert).status == "claimed"


def test_a_report_from_before_a_staff_retry_never_settles_the_retry_whose_try_was_lost(
    api, consul, db, dispatcher, twilio
):
    """A review: the rule above let any earlier try's report through. Sent, reported
    undelivered, retried by staff, and the retry's answer lost (a 500): the first message's
    "delivered", late or replayed (signatures carry no time), settled the row as delivered
    with nothing sent to the person."""
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0012")
    first_sid = alert.provider_ref
    assert callback(api, alert, "undelivered", ErrorCode="30003").status_code == 204
    assert status_of(db, alert).status == "undelivered"
    twilio.messages[0]["status"] = "undelivered"  # as Twilio lists it from now on
    assert api.post(f"/v1/alerts/{alert.id}/retry", headers=consul).status_code == 200
    twilio.script("+821077770012", Answer(500, code=20500))
    dispatcher.step(now=utcnow())  # one claim: its answer is a 500
    row = status_of(db, alert)
    assert (row.status, row.outcome_unknown, row.provider_ref) == ("retry_wait", True, None)
    callback(api, row, "delivered", attempt=1, sid=first_sid)
    assert status_of(db, alert).status == "retry_wait"


def test_a_queue_overflow_of_a_lost_try_is_sent_again_though_twilio_lists_it(
    api, consul, db, dispatcher, twilio
):
    """A review: a lost try's 30001 put the row back in the queue, still marked unknown; the
    look-up then found the dropped message in Twilio's list and recorded "sent", and nobody
    was alerted. A message Twilio lists as failed or undelivered is passed over."""
    first, made_by, sid = lost_try(api, consul, db, dispatcher, "010-7777-0013")
    claimed_again(db, lease_s=1)
    twilio.messages[0]["status"] = "failed"  # as Twilio lists a message its queue dropped
    callback(api, status_of(db, first), "failed", attempt=made_by, sid=sid, ErrorCode="30001")
    row = status_of(db, first)
    assert (row.status, row.outcome_unknown) == ("pending", True)
    db.execute(update(Alert).where(Alert.id == first.id).values(due_at=utcnow()))
    db.commit()
    dispatcher._paused_until.clear()  # as when the sender's hold ends
    dispatcher.drain()
    resent = status_of(db, first)
    assert len(twilio.bodies_to("+821077770013")) == 2
    assert resent.status == "sent" and resent.provider_ref != sid


def test_the_retry_budget_starts_afresh_after_a_staff_retry(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0007")
    callback(api, alert, "undelivered")
    assert status_of(db, alert).status == "undelivered"
    assert api.post(f"/v1/alerts/{alert.id}/retry", headers=consul).status_code == 200
    row = status_of(db, alert)
    assert (row.attempts, row.retry_base) == (1, 1)


PIGEON_REPORTS = """
    import hmac

    from service.dispatch.notifiers.base import DeliveryReport, Notifier, ReportRejected, Sent

    class ReportingPigeon(Notifier):
        name = "pigeon"
        channels = ("sms",)

        @classmethod
        def from_settings(cls, settings):
            return cls()

        def send(self, message):
            return Sent(provider_ref=f"pigeon-{message.alert_id}")

        def read_report(self, *, url, form, headers):
            if not hmac.compare_digest(headers.get("x-pigeon-key", ""), "loft-key"):
                raise ReportRejected("bad pigeon key")
            return DeliveryReport(provider_ref=form["id"], status=form["state"])
"""


def test_a_plugin_receives_its_own_delivery_reports(tmp_path, monkeypatch, db, staff_headers):
    plugin_on_path(
        tmp_path,
        monkeypatch,
        name="pigeon",
        target="anjeon_pigeon:ReportingPigeon",
        source=PIGEON_REPORTS,
    )
    configured = make_settings(
        db.get_bind().engine.url.render_as_string(hide_password=False),
        sms_notifier="pigeon",
        public_base_url=PUBLIC,
    )
    with bound_client(configured, db) as api:
        register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7777-0008", channels=["sms"])
        api.post("/v1/advisories", json=advisory_body(), headers=staff_headers("consul"))
        pigeons = dispatcher_in(db, configured)
        pigeons.drain()
        pigeons.close()
        db.expire_all()
        [row] = db.scalars(select(Alert))
        assert (row.status, row.provider_ref) == ("sent", f"pigeon-{row.id}")
        path = f"/v1/webhooks/pigeon/status?alert={row.id}&attempt={row.attempts}"
        report = {"id": row.provider_ref, "state": "delivered"}
        refused = api.post(path, data=report, headers={"X-Pigeon-Key": "guess"})
        assert refused.status_code == 403
        assert status_of(db, row).status == "sent"
        # Twilio's path takes nothing when Twilio is not the configured notifier.
        assert api.post(f"/v1/webhooks/twilio/status?alert={row.id}", data={}).status_code == 403
        accepted = api.post(path, data=report, headers={"X-Pigeon-Key": "loft-key"})
        assert accepted.status_code == 204
        assert status_of(db, row).status == "delivered"


def test_an_sms_reported_undelivered_falls_back_to_the_citizens_e_mail_once(
    api, consul, db, dispatcher, smtp
):
    """Found by a probe: an SMS Twilio reported undelivered (30003: the phone unreachable, as
    when it is off abroad) ended there, and the e-mail the citizen had given was never used;
    only a send refused at once fell back."""
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0031")
    email = db.scalar(select(Citizen.email_sealed).where(Citizen.id == alert.citizen_id))
    assert email is not None  # the citizen chose SMS and gave an e-mail too
    for _ in range(2):  # Twilio may report it twice
        assert callback(api, alert, "undelivered", ErrorCode="30003").status_code == 204
    db.expire_all()
    rows = {row.channel: row for row in db.scalars(select(Alert))}
    assert rows["sms"].status == "undelivered"
    assert (rows["email"].status, rows["email"].fallback_of) == ("pending", alert.id)
    dispatcher.drain()
    db.expire_all()
    assert db.get(Alert, rows["email"].id).status == "sent"
    assert len(smtp.received) == 1


def test_a_delivered_sms_or_one_without_another_contact_falls_back_to_nothing(
    api, consul, db, dispatcher, smtp
):
    register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7777-0032", channels=["sms"])
    register(
        api,
        location={"lat": 35.5, "lon": 139.5},
        phone="010-7777-0033",
        channels=["sms"],
        email=None,
    )
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    dispatcher.drain()
    db.expire_all()
    delivered, no_email = db.scalars(select(Alert).order_by(Alert.id))
    assert callback(api, delivered, "delivered").status_code == 204
    assert callback(api, no_email, "undelivered", ErrorCode="30003").status_code == 204
    db.expire_all()
    assert [row.channel for row in db.scalars(select(Alert))] == ["sms", "sms"]
    dispatcher.drain()
    assert smtp.received == []
