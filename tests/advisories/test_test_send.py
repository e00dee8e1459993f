"""Test sends through the app, the real twilio SDK against the fake Twilio and a real SMTP
server: the advisory as a citizen would get it, marked [TEST], to one staff contact; no alert
row, no citizen told; rate-limited per staff key."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.audit.models import AuditEntry
from service.citizens.models import Citizen, SmsOptOut
from service.citizens.verification import contact_hash
from service.config import Settings
from service.db import utcnow
from service.dispatch import sms_text
from service.dispatch.sms_opt_out import hear_opt_out
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import bound_client, make_settings
from tests.dispatch import conftest as dispatch_fixtures
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.fake_twilio import Answer

# The dispatch fixtures: fake Twilio and SMTP settings, a consul key, an in-test dispatcher.
consul = dispatch_fixtures.consul
dispatch_settings = dispatch_fixtures.dispatch_settings
dispatcher = dispatch_fixtures.dispatcher

TOKYO = {"lat": 35.5, "lon": 139.5}
STAFF_PHONE, STAFF_E164 = "010-9999-0001", "+821099990001"
STAFF_EMAIL = "desk@mofa.example"


def client_for(settings: Settings, db: Session) -> TestClient:
    client = bound_client(settings, db)
    # The test send reads in a session of its own (it holds none across the send).
    client.app.state.session_factory = sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    return client


@pytest.fixture
def api(dispatch_settings: Settings, db: Session) -> Iterator[TestClient]:
    with client_for(dispatch_settings, db) as client:
        yield client


def issue(api, consul, **overrides) -> str:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def alerts(db) -> int:
    return db.scalar(select(func.count()).select_from(Alert))


def send_test(api, headers, advisory_id: str, **body):
    return api.post(f"/v1/advisories/{advisory_id}/test-send", json=body, headers=headers)


def test_an_sms_test_is_the_citizens_text_marked_and_creates_no_alert(
    api, consul, db, dispatcher, twilio
):
    _, _, citizen = register(api, location=TOKYO, language="ko", channels=["sms"])
    citizen_phone = "+82" + citizen["phone"].replace("-", "")[1:]
    advisory = issue(api, consul)  # level 2: no check-in, a short text
    before = alerts(db)
    response = send_test(api, consul, advisory, phone=STAFF_PHONE)
    assert response.status_code == 202, response.text
    sent = response.json()
    [text] = twilio.bodies_to(STAFF_E164)
    assert sent["text"] == text and text.startswith("[TEST] [")
    assert sent["channel"] == "sms" and sent["to"] == "+82******0001"
    assert sent["outcome"] == "sent" and sent["segments"] == sms_text.segments(text)
    assert text.endswith("https://anjeon.test/a/TEST." + "0" * 24)
    assert alerts(db) == before
    assert twilio.bodies_to(citizen_phone) == []  # nobody else was told
    dispatcher.drain()
    [real] = twilio.bodies_to(citizen_phone)
    # The same words as the citizen's, only marked and with a link that opens nothing.
    assert text.removeprefix("[TEST] ").rsplit(" ", 1)[0] == real.rsplit(" ", 1)[0]
    assert twilio.bodies_to(STAFF_E164) == [text]
    assert api.get(f"/a/TEST.{'0' * 24}").status_code == 404
    # Where it went and what it said stay in the audit log: one consul's words, approved by
    # nobody (a review's lure left only the request's line behind).
    [entry] = db.scalars(select(AuditEntry).where(AuditEntry.action == "test send")).all()
    assert entry.subject == advisory and entry.actor
    assert entry.reason == f"sms to +82******0001: {text}"


@pytest.mark.parametrize(
    ("language", "ask"), [("ko", "답장 1 안전 / 2 도움"), ("en", "Reply 1 = safe / 2 = need help")]
)
def test_an_urgent_test_asks_for_a_check_in_within_the_segment_budget(
    api, consul, db, twilio, language, ask
):
    advisory = issue(api, consul, level=4, message={"ko": "즉시 " * 200, "en": "Leave now. " * 60})
    before = alerts(db)
    response = send_test(api, consul, advisory, phone=STAFF_PHONE, language=language)
    assert response.status_code == 202, response.text
    [text] = twilio.bodies_to(STAFF_E164)
    assert text.startswith("[TEST] [")
    assert text.endswith(f"{ask} https://anjeon.test/c/TEST-" + "0" * 26)
    assert sms_text.segments(text) <= 3 < sms_text.segments("즉시 " * 200)  # cut, mark kept
    assert response.json()["language"] == language
    assert api.get(f"/c/TEST-{'0' * 26}").status_code != 200
    assert alerts(db) == before


def test_an_email_test_is_marked_in_subject_text_and_html(api, consul, db, smtp):
    register(api, location=TOKYO, language="en", channels=["email"])
    advisory = issue(api, consul, level=4)
    before = alerts(db)
    response = send_test(api, consul, advisory, email=STAFF_EMAIL, language="en")
    assert response.status_code == 202, response.text
    [mail] = smtp.to(STAFF_EMAIL)
    assert mail["Subject"].startswith("[TEST] [") and "Level 4" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert text.startswith("[TEST] ") and "<strong>[TEST]</strong>" in html
    assert "https://anjeon.test/c/TEST-" in text and "Tokyo: reconsider travel" in text
    sent = response.json()
    assert sent["to"] == "d***@mofa.example" and sent["segments"] is None
    assert sent["subject"] == mail["Subject"] and sent["outcome"] == "sent"
    assert alerts(db) == before
    assert [m["To"] for m in smtp.received] == [STAFF_EMAIL]


def test_an_advisory_without_the_language_asked_keeps_the_readers_frame(api, consul, twilio):
    """Its title and text come in the language it has; the rest (sender, level, how to
    answer) in the reader's: before, an English reader got all of it in Korean, "답장 1 안전 /
    2 도움" included, and could not answer."""
    advisory = issue(
        api, consul, level=4, title={"ko": "도쿄 주의"}, message={"ko": "조심하십시오."}
    )
    response = send_test(api, consul, advisory, phone=STAFF_PHONE, language="en")
    assert response.status_code == 202 and response.json()["language"] == "en"
    [text] = twilio.bodies_to(STAFF_E164)
    assert "도쿄 주의" in text and "Level 4" in text and "Reply 1 = safe / 2 = need help" in text
    assert "답장" not in text


@pytest.mark.parametrize(("code", "stop_kept"), [(21610, True), (21408, False)])
def test_a_provider_refusal_is_reported_not_retried(api, consul, db, twilio, code, stop_kept):
    """Refused because the number said STOP to the provider (21610): kept as the number's STOP,
    as a citizen's send keeps it, for the consul's phone is also a registered citizen's here.
    Any other refusal keeps nothing."""
    citizen_id, _, _ = register(api, location=TOKYO, channels=["sms"], phone=STAFF_PHONE)
    advisory = issue(api, consul)
    twilio.script(STAFF_E164, Answer(status=400, code=code))
    response = send_test(api, consul, advisory, phone=STAFF_PHONE)
    assert response.status_code == 202, response.text
    assert response.json()["outcome"].startswith("not sent: ")
    assert response.json()["outcome"].endswith(f"({code})")
    assert twilio.bodies_to(STAFF_E164) == [] and len(twilio.posts) == 1
    db.expire_all()
    assert (db.scalar(select(func.count()).select_from(SmsOptOut)) == 1) is stop_kept
    citizen = db.scalar(select(Citizen).where(Citizen.public_id == citizen_id))
    assert citizen is not None and (citizen.sms_opted_out_at is not None) is stop_kept


def test_a_number_that_said_stop_is_not_texted(database_url, db, twilio, smtp, staff_headers):
    """A probe's test send texted a number that had replied STOP, with a check-in ask. It is
    refused (409, saying why, not when), once the send's limit is taken: a review found the
    refusal free, which told a key whether any number had said STOP."""
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), rate_limit_test_send="2/hour"
    )
    with client_for(settings, db) as api:
        consul = staff_headers("consul")
        advisory = issue(api, consul)
        vault = api.app.state.registry.vault
        stopped = contact_hash(vault, "sms", STAFF_E164)
        hear_opt_out(db, phone_hash=stopped, stop=True, now=utcnow())
        response = send_test(api, consul, advisory, phone=STAFF_PHONE)
        assert response.status_code == 409 and "replied STOP" in response.text
        assert str(utcnow().year) not in response.json()["detail"]
        assert twilio.posts == []
        hear_opt_out(db, phone_hash=stopped, stop=False, now=utcnow())
        assert send_test(api, consul, advisory, phone=STAFF_PHONE).json()["outcome"] == "sent"
        assert send_test(api, consul, advisory, phone=STAFF_PHONE).status_code == 429


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["phone", "email"]),
        ({"phone": STAFF_PHONE, "email": STAFF_EMAIL}, ["phone", "email"]),
        ({"phone": "02-2100-2114"}, ["phone"]),  # a Seoul landline takes no SMS
        ({"phone": "12"}, ["phone"]),
        ({"email": "not an address"}, ["email"]),
    ],
)
def test_exactly_one_valid_contact_is_needed(api, consul, db, twilio, smtp, body, fields):
    advisory = issue(api, consul)
    response = send_test(api, consul, advisory, **body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert twilio.posts == [] and smtp.received == []


def test_unknown_cancelled_and_viewer(api, consul, staff_headers, twilio):
    assert send_test(api, consul, "no-such-advisory", phone=STAFF_PHONE).status_code == 404
    advisory = issue(api, consul)
    viewer = staff_headers("viewer")
    assert send_test(api, viewer, advisory, phone=STAFF_PHONE).status_code == 403
    assert api.post(f"/v1/advisories/{advisory}/cancel", headers=consul).status_code == 200
    response = send_test(api, consul, advisory, phone=STAFF_PHONE)
    assert response.status_code == 409 and "cancelled" in response.json()["detail"]
    assert twilio.posts == []


def test_a_draft_can_be_tested_before_anyone_is_alerted(api, consul, db, twilio):
    register(api, location=TOKYO, channels=["sms"])
    response = api.post("/v1/advisories", json=advisory_body(draft=True), headers=consul)
    assert response.status_code == 201 and response.json()["status"] == "draft", response.text
    before = alerts(db)
    sent = send_test(api, consul, response.json()["id"], phone=STAFF_PHONE)
    assert sent.status_code == 202 and sent.json()["outcome"] == "sent", sent.text
    assert "도쿄 여행자제" in twilio.bodies_to(STAFF_E164)[0]
    assert alerts(db) == before


def test_test_sends_are_limited_per_staff_key(database_url, db, twilio, smtp, staff_headers):
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), rate_limit_test_send="2/hour"
    )
    with client_for(settings, db) as api:
        first, second = staff_headers("consul"), staff_headers("consul")
        advisory = issue(api, first)
        for _ in range(2):
            assert send_test(api, first, advisory, phone=STAFF_PHONE).status_code == 202
        refused = send_test(api, first, advisory, phone=STAFF_PHONE)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "test sends" in refused.json()["detail"]
        assert len(twilio.bodies_to(STAFF_E164)) == 2  # the refused one was not sent
        # A bad request counts nothing; another key has its own limit.
        assert send_test(api, second, advisory, phone="12").status_code == 422
        for _ in range(2):
            assert send_test(api, second, advisory, phone=STAFF_PHONE).status_code == 202


def test_a_key_cannot_text_its_unapproved_words_past_the_shared_message_limits(
    database_url, db, twilio, smtp, staff_headers
):
    """A probe test-sent a draft's lure to numbers in three countries with one consul key:
    test sends were limited per key alone. They now also count in the limits every message
    that is not an alert shares (per number block, foreign country, channel) and in the day's
    SMS budget; a refused one is not sent."""
    settings = make_settings(
        database_url,
        **notifier_settings(twilio, smtp),
        rate_limit_test_send="1000/hour",
        rate_limit_country="1/hour",
        sms_daily_budget=3,
    )
    with client_for(settings, db) as api:
        consul_key = staff_headers("consul")
        draft = issue(api, consul_key)
        assert send_test(api, consul_key, draft, phone="+79161234567").status_code == 202
        other = send_test(api, consul_key, draft, phone="+79161234568")
        assert other.status_code == 429 and "country" in other.json()["detail"]
        for _ in range(2):
            assert send_test(api, consul_key, draft, phone=STAFF_PHONE).status_code == 202
        spent = send_test(api, consul_key, draft, phone=STAFF_PHONE)
        assert spent.status_code == 429 and "budget" in spent.json()["detail"]
        assert 0 < int(spent.headers["Retry-After"]) <= 86_400
        assert len(twilio.bodies_to("+79161234567")) == 1
        assert twilio.bodies_to("+79161234568") == []
        assert len(twilio.bodies_to(STAFF_E164)) == 2
        # E-mail is not SMS: the budget does not hold it.
        assert send_test(api, consul_key, draft, email=STAFF_EMAIL).status_code == 202
