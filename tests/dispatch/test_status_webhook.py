"""Twilio's delivery callbacks: signed against the public URL, repeatable, never backwards."""

from sqlalchemy import select
from twilio.request_validator import RequestValidator

from service.dispatch.models import Alert
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.dispatch.fake_twilio import AUTH_TOKEN

PUBLIC = "https://anjeon.test"


def sent_sms(api, consul, db, dispatcher, phone: str) -> Alert:
    register(api, location={"lat": 35.5, "lon": 139.5}, phone=phone, channels=["sms"])
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    dispatcher.drain()
    db.expire_all()
    [row] = db.scalars(select(Alert))
    assert row.status == "sent"
    return row


def callback(api, alert: Alert, status: str, *, signed: bool = True, **extra: str):
    path = f"/v1/webhooks/twilio/status?alert={alert.id}"
    form = {
        "MessageSid": alert.provider_ref,
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


def test_callback_for_another_message_changes_nothing(api, consul, db, dispatcher):
    alert = sent_sms(api, consul, db, dispatcher, "010-7777-0005")
    path = f"/v1/webhooks/twilio/status?alert={alert.id}"
    form = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form)
    assert api.post(path, data=form, headers={"X-Twilio-Signature": signature}).status_code == 204
    assert status_of(db, alert).status == "sent"
