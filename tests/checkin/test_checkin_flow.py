"""Check-in end to end through the app, the real twilio SDK against the fake Twilio, and a real
SMTP server: an urgent alert asks, replies are heard (signed as Twilio signs them), the link's
page records only on a button press, a help answer reaches the duty e-mail, STOP stops texts."""

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.audit.models import AuditEntry
from service.checkin import duty
from service.checkin.answers import (
    HELP_MESSAGES_KEPT,
    forget_old_inbound,
    forget_old_words,
    hash_inbound_ids,
)
from service.checkin.duty import REPAGE_AFTER, REPAGE_MOST, repage_after
from service.checkin.models import Checkin, CheckinAnswer, HelpMessage, InboundSms
from service.checkin.page import MAX_ANSWERS
from service.citizens.messages import duty_told_of_spent_budget
from service.citizens.models import (
    ESTABLISHED_AFTER,
    Citizen,
    SmsOptOut,
    established,
    is_established,
)
from service.citizens.service import erase_citizen
from service.config import Settings
from service.db import utcnow
from service.dispatch import sms_text
from service.dispatch.reference import Links
from service.lease import SchedulerLease
from service.ledger.models import Alert
from service.privacy import UNREADABLE, PersonalDataVault
from service.rate_limits import RateLimits, Rule
from service.scheduler import run_duty_notices
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.checkin.conftest import _LINK, INBOUND, inbound_form, signed
from tests.conftest import TEST_SECRET, WarningRecords, make_settings
from tests.dispatch.fake_twilio import Answer
from tests.loopback_server import serve_in_thread

TOKYO = {"lat": 35.5, "lon": 139.5}
CHECKIN_LINK = re.compile(r"https://anjeon\.test/c/([A-Za-z0-9_-]+)")


def e164(korean_mobile: str) -> str:
    return "+82" + korean_mobile.replace("-", "")[1:]


def issue(api, consul, **overrides) -> str:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def citizen(api, *, language: str = "ko", channels=("sms", "email"), **overrides):
    cid, _, body = register(
        api,
        location=overrides.pop("location", TOKYO),
        language=language,
        channels=list(channels),
        **overrides,
    )
    return cid, e164(body["phone"]), body["email"]


def answers_of(db, public_id: str) -> list[CheckinAnswer]:
    db.expire_all()
    row = db.scalar(select(Citizen).where(Citizen.public_id == public_id))
    query = select(CheckinAnswer).where(CheckinAnswer.citizen_id == row.id)
    return list(db.scalars(query.order_by(CheckinAnswer.id)))  # unordered, PostgreSQL may swap


@pytest.mark.parametrize(
    ("language", "ask"), [("ko", "답장 1 안전 / 2 도움"), ("en", "Reply 1 = safe / 2 = need help")]
)
def test_an_urgent_alert_asks_by_sms_and_email_within_the_segment_budget(
    api, consul, db, dispatcher, twilio, smtp, language, ask
):
    _, phone, email = citizen(api, language=language)
    issue(api, consul, level=4, message={"ko": "즉시 " * 200, "en": "Leave now. " * 60})
    dispatcher.drain()
    [sms] = twilio.bodies_to(phone)
    match = CHECKIN_LINK.search(sms)
    assert match and sms.endswith(f"{ask} {match.group(0)}"), sms
    assert sms_text.segments(sms) <= 3  # the long message was cut, the ask and link were not
    [mail] = [m for m in smtp.received if m["To"] == email]
    text = mail.get_body(("plain",)).get_content()
    assert CHECKIN_LINK.search(text) and "/a/" in text


def test_a_level_2_alert_does_not_ask(api, consul, db, dispatcher, twilio):
    _, phone, _ = citizen(api, quiet_hours=None)
    issue(api, consul, level=2)
    dispatcher.drain()
    [sms] = twilio.bodies_to(phone)
    assert "/c/" not in sms and "/a/" in sms and "1" not in sms.split("/a/")[0][-20:]


def test_a_reply_is_recorded_and_answered_in_twiml_in_the_citizens_language(
    api, consul, db, dispatcher, reply
):
    cid, phone, _ = citizen(api, language="ko")
    issue(api, consul, level=3)
    dispatcher.drain()
    response = reply(phone, " １ 안전합니다! ")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert re.fullmatch(
        r"<\?xml[^>]*\?><Response><Message>[^<]*안전[^<]*</Message></Response>", response.text
    )
    [given] = answers_of(db, cid)
    assert (given.answer, given.channel) == ("safe", "sms")
    # The latest answer wins; both are kept.
    assert "도움" in reply(phone, "2 - need help").text
    history = answers_of(db, cid)
    assert [a.answer for a in history] == ["safe", "help"]
    db.expire_all()
    current = db.scalar(select(Checkin).where(Checkin.citizen_id == history[0].citizen_id))
    assert current.answer == "help" and current.answer_id == history[1].id


def test_an_unparsed_reply_gets_how_to_answer_and_stores_nothing(
    api, consul, db, dispatcher, reply
):
    cid, phone, _ = citizen(api, language="en")
    issue(api, consul, level=4)
    dispatcher.drain()
    for body in ("12", "maybe"):
        text = reply(phone, body).text
        assert "1" in text and "2" in text and "safe" in text.lower()
    assert answers_of(db, cid) == []


def test_unsigned_or_forged_inbound_is_403_and_touches_nothing(api, consul, db, dispatcher, reply):
    cid, phone, _ = citizen(api)
    issue(api, consul, level=4)
    dispatcher.drain()
    assert reply(phone, "1", sign=False).status_code == 403
    form = inbound_form(phone, "1")
    headers = signed({**form, "Body": "2"})  # signed over another body
    assert api.post("/v1/webhooks/twilio/inbound", data=form, headers=headers).status_code == 403
    assert answers_of(db, cid) == []


def test_an_unknown_number_gets_a_neutral_answer_and_nothing_is_stored(
    api, consul, db, dispatcher, reply
):
    citizen(api)
    issue(api, consul, level=4)
    dispatcher.drain()
    response = reply("+821099998888", "2 help")
    assert response.status_code == 200 and "Please reply to a safety check-in" in response.text
    assert db.scalar(select(CheckinAnswer)) is None
    # A registered number with no open check-in is answered the same way.
    _, idle, _ = citizen(api, location={"lat": 48.85, "lon": 2.35})
    assert reply(idle, "1").text == response.text


def test_stop_opts_out_of_sms_staff_see_it_and_start_opts_back_in(
    api, consul, db, dispatcher, reply, twilio, smtp
):
    cid, phone, email = citizen(api)
    assert reply(phone, "STOP").text.endswith("<Response></Response>")
    db.expire_all()
    row = db.scalar(select(Citizen).where(Citizen.public_id == cid))
    assert row.sms_opted_out_at is not None
    listed = api.get("/v1/registry/citizens?country=JP", headers=consul).json()["items"]
    assert [c["sms_opted_out"] for c in listed if c["id"] == cid] == [True]
    revealed = api.post(
        f"/v1/citizens/{cid}/reveal", json={"reason": "duty check of an opt-out"}, headers=consul
    ).json()
    assert revealed["sms_opted_out_at"] is not None
    issue(api, consul, level=4)
    dispatcher.drain()
    assert twilio.bodies_to(phone) == []
    db.expire_all()
    sms_row = db.scalar(select(Alert).where(Alert.citizen_id == row.id, Alert.channel == "sms"))
    assert (sms_row.status, sms_row.error_code) == ("failed", "opted-out")
    assert [m["To"] for m in smtp.received] == [email]
    # Their SMS answer still counts, and is not answered: a text of ours goes to no number
    # that said STOP (a probe got a TwiML reply), nor to an unknown one that did.
    answered = reply(phone, "1")
    assert answered.text.endswith("<Response></Response>")
    assert [a.answer for a in answers_of(db, cid)] == ["safe"]
    assert "<Message>" in reply(phone, "2 trapped").text  # a cry for help is acknowledged
    stranger = "+821052529999"
    reply(stranger, "STOP")
    assert reply(stranger, "hello?").text.endswith("<Response></Response>")
    # Nor a "2" from it: no citizen holds it, so nothing is recorded to acknowledge (a probe
    # got the "reply to a check-in" text).
    assert reply(stranger, "2 help").text.endswith("<Response></Response>")
    assert "<Message>" in reply("+821052529998", "hello?").text  # one that did not
    reply(phone, "start")
    db.expire_all()
    assert db.get(Citizen, row.id).sms_opted_out_at is None
    assert "<Message>" in reply(phone, "1").text


def test_a_stop_only_the_provider_heard_is_kept_as_the_numbers_stop(
    api, consul, db, dispatcher, reply, twilio, smtp
):
    """A number that said STOP to the provider and not to us (before it registered, or to a
    sender whose webhook is not ours) fails with Twilio 21610. Before, that was a failed row
    and nothing else: staff saw no STOP, and every advisory and every check-in round texted
    the number again, to be refused again. The refusal is now kept as the number's STOP."""
    cid, phone, email = citizen(api)
    twilio.script(phone, Answer(400, code=21610))
    issue(api, consul, level=4)
    dispatcher.drain()
    db.expire_all()
    row = db.scalar(select(Citizen).where(Citizen.public_id == cid))
    assert row.sms_opted_out_at is not None
    assert db.scalar(select(SmsOptOut.opted_out_at).where(SmsOptOut.phone_hash == row.phone_hash))
    sms_row = db.scalar(select(Alert).where(Alert.citizen_id == row.id, Alert.channel == "sms"))
    assert (sms_row.status, sms_row.error_code) == ("failed", "21610")
    assert [m["To"] for m in smtp.received] == [email]  # the e-mail still went
    listed = api.get("/v1/registry/citizens?country=JP", headers=consul).json()["items"]
    assert [c["sms_opted_out"] for c in listed if c["id"] == cid] == [True]

    tried = len(twilio.posts)
    issue(api, consul, level=4)
    dispatcher.drain()
    assert len(twilio.posts) == tried  # not texted again to be refused again
    assert len(smtp.received) == 2
    # START opts them back in, as a STOP that reached us would.
    reply(phone, "START")
    issue(api, consul, level=4)
    dispatcher.drain()
    assert len(twilio.posts) == tried + 1


def test_a_start_heard_while_a_refused_send_was_under_way_stands(
    api, consul, db, dispatcher, reply, twilio
):
    """A review: a 21610 refusal is written up to half a second after it came, and a START
    heard in between was undone (the number marked STOP again, and nothing texted to it until
    it said START once more). A refusal of a send begun before the START now changes nothing."""
    cid, phone, _ = citizen(api)
    let_go = threading.Event()
    twilio.script(phone, Answer(400, code=21610, hold=let_go))
    issue(api, consul, level=4)
    sending = threading.Thread(target=dispatcher.drain)
    sending.start()
    try:
        deadline = time.monotonic() + 30
        while twilio.holding < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert twilio.holding == 1
        reply(phone, "START")  # heard while the send that will be refused is under way
    finally:
        let_go.set()
        sending.join(timeout=60)
    db.expire_all()
    row = db.scalar(select(Citizen).where(Citizen.public_id == cid))
    assert row.sms_opted_out_at is None
    sms_row = db.scalar(select(Alert).where(Alert.citizen_id == row.id, Alert.channel == "sms"))
    assert (sms_row.status, sms_row.error_code) == ("failed", "21610")


def test_stop_belongs_to_the_number_a_new_phone_is_texted_and_the_citizen_sees_it(
    api, consul, db, dispatcher, reply, twilio
):
    """Before, STOP stuck to the record: a citizen who changed phone after a STOP got no SMS
    at all on the new number (a review's level-3 alert failed 'opted-out'). A number that
    said STOP keeps it when another record takes it."""
    first, first_manage, body = register(api, location=TOKYO, channels=["sms"], email=None)
    number = e164(body["phone"])
    reply(number, "STOP")
    assert api.get(f"/v1/citizens/{first}", headers=first_manage).json()["sms_opted_out"] is True
    # The number moves to a new record (a new registration that verifies it): STOP goes along.
    cid, manage, _ = register(
        api, location=TOKYO, channels=["sms"], email=None, phone=body["phone"]
    )
    record = f"/v1/citizens/{cid}"
    assert api.get(record, headers=manage).json()["sms_opted_out"] is True
    # A new number of its own is opted in, and is texted.
    changed = api.patch(record, json={"phone": "010-5151-0001"}, headers=manage)
    assert changed.status_code == 200 and changed.json()["sms_opted_out"] is False
    issue(api, consul, level=3)
    dispatcher.drain()
    assert twilio.bodies_to("+821051510001") != []
    assert twilio.bodies_to(number) == []


def test_a_stop_outlives_the_record_that_sent_it_and_is_kept_for_a_number_nobody_holds(
    api, consul, db, dispatcher, reply, twilio
):
    """Before, STOP lived on the citizen row only: once that record changed number (or was
    erased), the number's STOP was forgotten and whoever registered it next was texted (the
    provider refuses: 21610); a STOP from a number no record held was not kept at all."""
    first, manage, body = register(api, location=TOKYO, channels=["sms"], email=None)
    number = e164(body["phone"])
    reply(number, "STOP")
    moved = api.patch(f"/v1/citizens/{first}", json={"phone": "010-5151-0002"}, headers=manage)
    assert moved.status_code == 200 and moved.json()["sms_opted_out"] is False
    later, later_manage, _ = register(
        api, location=TOKYO, channels=["sms"], email=None, phone=body["phone"]
    )
    assert api.get(f"/v1/citizens/{later}", headers=later_manage).json()["sms_opted_out"] is True

    stranger = "+821052520003"
    assert reply(stranger, "STOP").text.endswith("<Response></Response>")
    assert len(db.scalars(select(SmsOptOut)).all()) == 2  # the first number's, and this one
    cid, cid_manage, _ = register(
        api, location=TOKYO, channels=["sms"], email=None, phone="010-5252-0003"
    )
    record = f"/v1/citizens/{cid}"
    assert api.get(record, headers=cid_manage).json()["sms_opted_out"] is True
    reply(stranger, "START")
    assert api.get(record, headers=cid_manage).json()["sms_opted_out"] is False
    issue(api, consul, level=3)
    dispatcher.drain()
    assert twilio.bodies_to(stranger) != [] and twilio.bodies_to("+821051510002") != []
    assert twilio.bodies_to(number) == []


def _token_for(db, public_id: str, advisory_public_id: str, *, expires_in: timedelta) -> str:
    from service.advisories.models import Advisory

    links = Links("https://anjeon.test", PersonalDataVault(TEST_SECRET.encode()))
    row = db.scalar(select(Citizen).where(Citizen.public_id == public_id))
    advisory = db.scalar(select(Advisory).where(Advisory.public_id == advisory_public_id))
    asked = utcnow() + expires_in - timedelta(days=7)
    return links.checkin_token(citizen_id=row.id, advisory_id=advisory.id, asked_at=asked)


def test_the_link_page_records_only_on_a_button_press(api, consul, db, dispatcher, twilio):
    cid, phone, _ = citizen(api, language="en")
    issue(api, consul, level=4)
    dispatcher.drain()
    token = CHECKIN_LINK.search(twilio.bodies_to(phone)[0]).group(1)
    page = api.get(f"/c/{token}")
    assert page.status_code == 200 and "I am safe" in page.text and "I need help" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert answers_of(db, cid) == []  # a link scanner's GET records nothing
    done = api.post(f"/c/{token}", data={"answer": "safe", "note": "at the hotel"})
    assert done.status_code == 200 and "Recorded: you are safe" in done.text
    [given] = answers_of(db, cid)
    assert (given.answer, given.channel) == ("safe", "web")
    bad = api.post(f"/c/{token}", data={"answer": "fine"})
    assert bad.status_code == 422 and "answer" in bad.text
    assert len(answers_of(db, cid)) == 1


def test_tampered_and_expired_tokens_are_404(api, consul, db, dispatcher, twilio):
    cid, phone, _ = citizen(api)
    advisory = issue(api, consul, level=4)
    dispatcher.drain()
    token = CHECKIN_LINK.search(twilio.bodies_to(phone)[0]).group(1)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in (flipped, token[:-3], "x" + token, "AAAA"):
        assert api.get(f"/c/{wrong}").status_code == 404
        assert api.post(f"/c/{wrong}", data={"answer": "safe"}).status_code == 404
    expired = _token_for(db, cid, advisory, expires_in=timedelta(seconds=-1))
    assert api.get(f"/c/{expired}").status_code == 404
    fresh = _token_for(db, cid, advisory, expires_in=timedelta(hours=1))
    assert api.get(f"/c/{fresh}").status_code == 200
    assert answers_of(db, cid) == []


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_help_answer_reaches_the_duty_email_at_once(
    api, consul, db, dispatcher, twilio, smtp, reply
):
    api.app.state.settings.duty_email = ["duty@mofa.test", "night@mofa.test"]
    cid, phone, _ = citizen(api, name="홍길동")
    issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake near Tokyo"})
    dispatcher.drain()
    before = len(smtp.received)
    reply(phone, "2 trapped in the hotel lobby")
    duty = [m for m in smtp.received[before:] if m["To"] in ("duty@mofa.test", "night@mofa.test")]
    assert sorted(m["To"] for m in duty) == ["duty@mofa.test", "night@mofa.test"]
    text = duty[0].get_body(("plain",)).get_content()
    for expected in ("홍길동", phone, "trapped in the hotel lobby", "Earthquake near Tokyo", cid):
        assert expected in text
    db.expire_all()
    assert db.scalar(select(Checkin)).duty_notified_at is not None
    # Help again changes nothing for the duty staff: they were told.
    reply(phone, "help")
    assert len([m for m in smtp.received if m["To"] == "duty@mofa.test"]) == 1


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_safe_that_also_asks_for_help_is_help_and_its_words_reach_the_duty_staff(
    api, consul, db, dispatcher, smtp, reply
):
    """ "I'm OK but my wife is hurt" says safe and help: it is help, the duty staff read the
    words, and the citizen is told how to say they are all safe (one more text)."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api, language="en")
    issue(api, consul, level=4)
    dispatcher.drain()
    text = reply(phone, "I'm OK but my wife is hurt, we are at the Grand Hotel").text
    assert "told the consular duty staff" in text and "Reply 1 if you are safe" in text
    [given] = answers_of(db, cid)
    assert given.answer == "help"
    [notice] = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
    assert "my wife is hurt, we are at the Grand Hotel" in notice.get_body(("plain",)).get_content()
    # The slip (or the all-clear) is one text away, and it is the answer in force.
    reply(phone, "1")
    assert [a.answer for a in answers_of(db, cid)] == ["help", "safe"]


@pytest.mark.usefixtures("app_sessions_in_test")
def test_answering_1_2_1_2_pages_the_duty_staff_once_in_five_minutes_and_drops_nothing(
    api, consul, db, dispatcher, smtp, reply, twilio
):
    """An attacker's probe sent 20 duty pages with 20 SMS toggling 1 and 2. A help within
    REPAGE_AFTER of the last page about the citizen now waits for the minute job."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api)
    issue(api, consul, level=4)
    dispatcher.drain()
    for _ in range(5):
        reply(phone, "2")
        reply(phone, "1")
    reply(phone, "2 trapped on the 3rd floor")
    # A safe from the page while the page waits: the help stays, and the notice says so.
    token = CHECKIN_LINK.search(twilio.bodies_to(phone)[0]).group(1)
    assert api.post(f"/c/{token}", data={"answer": "safe"}).status_code == 200

    def pages() -> list[str]:
        duty = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
        return [m.get_body(("plain",)).get_content() for m in duty]

    assert len(pages()) == 1
    db.expire_all()
    assert db.scalar(select(Checkin.duty_notified_at)) is None  # waiting, not dropped
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(pages()) == 1  # paged about them a moment ago
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    # Six helps in a day: the next page waits REPAGE_MOST, not REPAGE_AFTER (a leaked link
    # toggled for a week would page every 5 minutes).
    paged_before(db, cid, REPAGE_AFTER * 2)
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(pages()) == 1
    paged_before(db, cid, REPAGE_MOST)
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(pages()) == 2 and "trapped on the 3rd floor" in pages()[-1]
    assert "Since then: 'safe' pressed on their check-in page" in pages()[-1]
    assert "Since then" not in pages()[0]
    db.expire_all()
    assert db.scalar(select(Checkin.duty_notified_at)) is not None


@pytest.mark.usefixtures("app_sessions_in_test")
def test_the_duty_job_says_sent_late_only_when_a_notice_went(api, consul, db, dispatcher, reply):
    """Found by a newcomer: with no duty contact set, the minute job logged "duty notices sent
    late" with "told": 0 every minute."""
    settings = api.app.state.settings
    settings.duty_email = []
    _, phone, _ = citizen(api)
    issue(api, consul, level=4)
    dispatcher.drain()
    reply(phone, "2 trapped")
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    told = WarningRecords()
    logging.getLogger("anjeon.scheduler").addHandler(told)
    try:
        run_duty_notices(dispatcher, api.app.state.session_factory, settings)
        assert "duty notices waiting, none sent" in told.messages
        assert "duty notices sent late" not in told.messages
        settings.duty_email = ["duty@mofa.test"]
        run_duty_notices(dispatcher, api.app.state.session_factory, settings)
        late = [r for r in told.records if r.getMessage() == "duty notices sent late"]
        assert len(late) == 1 and late[0].told >= 1  # type: ignore[attr-defined]
    finally:
        logging.getLogger("anjeon.scheduler").removeHandler(told)


def paged_before(db: Session, cid: str, gap: timedelta) -> None:
    """The duty staff were last paged about the citizen `gap` and a second ago."""
    later = utcnow() - gap - timedelta(seconds=1)
    db.execute(update(Citizen).where(Citizen.public_id == cid).values(duty_paged_at=later))


def test_the_gap_between_pages_doubles_with_each_help_of_the_day_up_to_an_hour() -> None:
    gaps = [repage_after(helps) for helps in range(1, 8)]
    assert gaps[:5] == [timedelta(minutes=m) for m in (5, 10, 20, 40, 60)]
    assert set(gaps[4:]) == {REPAGE_MOST}


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_second_help_of_the_day_is_paged_after_ten_minutes_and_a_drills_helps_count_apart(
    api, consul, db, dispatcher, smtp, reply
):
    """Help, safe, help: the second help is two of the day, so its page waits 10 minutes after
    the first. Helps in a drill do not lengthen the wait of a real one."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api, exercises=True)
    issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    for _ in range(3):
        reply(phone, "2 drill")
        reply(phone, "1")
    issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    dispatcher.drain()
    reply(phone, "2 the wall fell")
    reply(phone, "1")
    reply(phone, "2 still trapped")

    def pages() -> list[str]:
        duty = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
        return [
            m.get_body(("plain",)).get_content() for m in duty if "[EXERCISE]" not in m["Subject"]
        ]

    assert len(pages()) == 1 and "the wall fell" in pages()[0]
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    paged_before(db, cid, REPAGE_AFTER)
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(pages()) == 1  # two real helps today: 10 minutes
    paged_before(db, cid, repage_after(2))
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(pages()) == 2 and "still trapped" in pages()[-1]


@pytest.mark.usefixtures("app_sessions_in_test")
def test_one_sms_under_two_advisories_is_one_help_of_the_day(
    api, consul, db, dispatcher, smtp, reply
):
    """Found in review: one "2" answers every open check-in, a row each, and the back-off
    counted each row: "2, 1, 2" under two advisories waited 40 minutes, not 10."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api)
    issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    issue(api, consul, level=4, title={"ko": "해일", "en": "Tsunami"})
    dispatcher.drain()
    reply(phone, "2 the wall fell")
    reply(phone, "1")
    reply(phone, "2 still trapped")

    def pages() -> int:
        return len([m for m in smtp.received if m["To"] == "duty@mofa.test"])

    assert pages() == 1
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    paged_before(db, cid, repage_after(2))
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert pages() == 2


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_drills_page_never_holds_up_a_real_cry_for_help(api, consul, db, dispatcher, smtp, reply):
    """A citizen answers "2" in a drill and is paged about ([EXERCISE]); a real earthquake a
    minute later, and their real "2": before, it waited up to REPAGE_AFTER (5 minutes) behind
    the drill's page. Now it goes at once, and real pages still hold up real ones."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api, exercises=True)
    issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    reply(phone, "2 drill: twisted ankle")

    def pages() -> list[str]:
        duty = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
        return [m.get_body(("plain",)).get_content() for m in duty]

    [drill_page] = pages()
    assert drill_page.startswith("[EXERCISE]")
    real = issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    dispatcher.drain()
    reply(phone, "2 the wall fell, we are trapped")
    assert len(pages()) == 2, "the real cry for help waited behind the drill's page"
    assert not pages()[1].startswith("[EXERCISE]") and real in pages()[1]
    assert "we are trapped" in pages()[1]
    # The same citizen toggling 1 and 2 under the real advisory: paged once, as before.
    reply(phone, "1")
    reply(phone, "2 still trapped")
    assert len(pages()) == 2
    db.expire_all()
    paged = db.execute(
        select(Citizen.duty_paged_at, Citizen.duty_drill_paged_at).where(Citizen.public_id == cid)
    ).one()
    assert paged.duty_paged_at is not None and paged.duty_drill_paged_at is not None


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_cry_for_help_that_no_check_in_asked_for_reaches_the_duty_staff(
    api, consul, staff_headers, db, dispatcher, smtp, reply
):
    """A registered citizen texts "2 …" with no check-in open (no advisory reached them, or
    it ended): before, they were told to reply to a check-in message and nothing was kept. Now
    the message is kept and the duty staff told (by the minute job if not at once); an
    unknown number still learns nothing."""
    settings = api.app.state.settings
    settings.duty_email = []  # first nobody to tell: it waits for the minute job
    cid, phone, _ = citizen(api, name="김민수", location={"lat": 48.85, "lon": 2.35})
    answered = reply(phone, "2 도와주세요 다쳤어요")
    # Nobody is paged yet: the citizen is not told the duty staff were.
    assert "영사 직원이 확인합니다" in answered.text and "알렸습니다" not in answered.text
    assert "1을" not in answered.text  # no "reply 1 if safe": nothing would take a "1"
    db.expire_all()
    [kept] = db.scalars(select(HelpMessage)).all()
    assert kept.note_sealed is not None and kept.duty_notified_at is None
    assert b"\xeb\x8b\xa4\xec\xb3\xa4" not in kept.note_sealed  # sealed, not plain UTF-8
    assert db.scalar(select(CheckinAnswer)) is None  # no advisory to file it under
    db.execute(update(HelpMessage).values(received_at=utcnow() - timedelta(minutes=2)))
    settings.duty_email = ["duty@mofa.test"]
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    [notice] = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
    text = notice.get_body(("plain",)).get_content()
    for expected in ("김민수", phone, "도와주세요 다쳤어요", "No check-in was open", cid):
        assert expected in text
    db.expire_all()
    assert db.scalar(select(HelpMessage.duty_notified_at)) is not None
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len([m for m in smtp.received if m["To"] == "duty@mofa.test"]) == 1
    # At once when a duty contact is set, then at most once in HELP_MESSAGE_QUIET (an
    # auto-responder must not page them again and again); what comes in between waits and goes
    # in the next notice, never dropped. "1" or an unknown number keep nothing.
    assert "당직자" not in reply(phone, "1").text
    reply("+821099998888", "2 help")
    long_ago = utcnow() - timedelta(minutes=31)
    db.execute(update(HelpMessage).values(received_at=long_ago, duty_notified_at=long_ago))
    reply(phone, "help, my passport was stolen")
    reply(phone, "emergency: call me at the Hotel Lumiere")

    def told() -> list[str]:
        duty = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
        return [m.get_body(("plain",)).get_content() for m in duty]

    assert len(told()) == 2 and "passport was stolen" in told()[-1]
    assert "Lumiere" not in told()[-1]
    db.expire_all()
    kept = db.scalars(select(HelpMessage).order_by(HelpMessage.id)).all()
    assert [m.duty_notified_at is not None for m in kept] == [True, True, False]
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(told()) == 2  # paged about them minutes ago: it waits
    # Consuls find them in the console's list: one row for the citizen, masked, no words.
    listed = api.get("/v1/help-messages", headers=consul)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    [row] = page["items"]
    assert page["total"] == 1 and row["citizen_id"] == cid and row["country"] == "FR"
    assert (row["messages"], row["waiting"]) == (3, 1) and "*" in row["contact"]
    assert phone not in listed.text and "passport" not in listed.text
    assert api.get("/v1/help-messages", headers=staff_headers("viewer")).status_code == 403
    # Once the quiet half hour has passed, the minute job pages with what waited.
    db.execute(
        update(HelpMessage)
        .where(HelpMessage.duty_notified_at.is_not(None))
        .values(duty_notified_at=utcnow() - timedelta(minutes=31))
    )
    db.execute(
        update(HelpMessage)
        .where(HelpMessage.duty_notified_at.is_(None))
        .values(received_at=utcnow() - timedelta(minutes=2))
    )
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len(told()) == 3 and "call me at the Hotel Lumiere" in told()[-1]
    db.expire_all()
    assert None not in db.scalars(select(HelpMessage.duty_notified_at)).all()
    # A consul who reveals them (with a reason) reads all three, newest first, under no advisory.
    revealed = api.post(
        f"/v1/citizens/{cid}/reveal",
        json={"reason": "A help message with no check-in open; calling."},
        headers=consul,
    ).json()
    assert [(s["words"], s["advisories"], s["answer"]) for s in revealed["said"]] == [
        ("help, my passport was stolen", [], "help"),
        ("emergency: call me at the Hotel Lumiere", [], "help"),  # moved 2 minutes back
        ("2 도와주세요 다쳤어요", [], "help"),
    ]
    # Erasure takes their words.
    db.expire_all()
    erase_citizen(db, citizen=db.scalar(select(Citizen).where(Citizen.public_id == cid)))
    assert {m.note_sealed for m in db.scalars(select(HelpMessage))} == {None}
    assert api.get("/v1/help-messages", headers=consul).json()["total"] == 0


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_number_that_floods_help_messages_buries_nobody_and_pages_once(
    api, consul, db, dispatcher, smtp, reply
):
    """An auto-responder (or someone malicious) texts "help" 30 times in a minute: 20 are kept
    (HELP_MESSAGES_KEPT an hour), the duty staff are paged once, and the console's list still
    shows the other citizen who asked for help, one row per citizen."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    noisy, noisy_phone, _ = citizen(api, location={"lat": 48.85, "lon": 2.35})
    quiet, quiet_phone, _ = citizen(api, location={"lat": 48.86, "lon": 2.34})
    reply(quiet_phone, "help, I was robbed near the station")
    for n in range(30):
        reply(noisy_phone, f"help {n} " + "x" * 400)
    db.expire_all()
    noisy_id = db.scalar(select(Citizen.id).where(Citizen.public_id == noisy))
    kept = db.scalars(select(HelpMessage).where(HelpMessage.citizen_id == noisy_id)).all()
    assert len(kept) == HELP_MESSAGES_KEPT
    paged = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
    assert len(paged) == 2  # the quiet one's, and the noisy one's first
    listed = api.get("/v1/help-messages", headers=consul).json()
    assert listed["total"] == 2
    assert {(i["citizen_id"], i["messages"]) for i in listed["items"]} == {
        (noisy, HELP_MESSAGES_KEPT),
        (quiet, 1),
    }


def test_a_number_that_keeps_texting_is_recorded_but_answered_only_within_the_limit(
    api, consul, db, dispatcher
):
    """Each answer is an SMS we pay for: past the shipped per-number limit, silence."""
    shipped = Settings.model_fields["rate_limit_reply"].default
    assert shipped == "10/hour;30/day"
    api.app.state.rate_limits = RateLimits(make_settings("sqlite://", rate_limit_reply=shipped))
    cid, phone, _ = citizen(api)
    issue(api, consul, level=4)
    dispatcher.drain()
    forms = [inbound_form(phone, "1") for _ in range(12)]
    answered = ["<Message>" in api.post(INBOUND, data=f, headers=signed(f)).text for f in forms]
    assert answered == [True] * 10 + [False] * 2
    assert len(answers_of(db, cid)) == 12


def test_numbers_no_citizen_holds_get_one_answer_a_day_each_and_a_few_all_together(api, db):
    """A probe texted from 40 numbers no citizen holds and got 40 answers, each an SMS out of
    the codes' budget: 10 an hour each, with nothing over all of them. Now one a day each
    (the shipped limit), and all of them together a few (3 an hour here)."""
    shipped = Settings.model_fields["rate_limit_reply_unknown"].default
    assert shipped == "1/day"
    limits = make_settings(
        "sqlite://", rate_limit_reply_unknown=shipped, rate_limit_reply_unknown_all="3/hour"
    )
    api.app.state.rate_limits = RateLimits(limits)
    strangers = [f"+1500555{n:04d}" for n in range(5)]

    def answered(sender: str) -> bool:
        form = inbound_form(sender, "hello?")
        return "<Message>" in api.post(INBOUND, data=form, headers=signed(form)).text

    assert [answered(strangers[0]) for _ in range(3)] == [True, False, False]
    assert [answered(sender) for sender in strangers[1:]] == [True, True, False, False]
    assert db.scalar(select(func.count()).select_from(CheckinAnswer)) == 0  # nothing stored
    # A citizen's number, with nothing open to answer, is a citizen's: limited as one.
    _, phone, _ = citizen(api)
    assert [answered(phone) for _ in range(3)] == [True, True, True]


def test_an_answer_that_spends_the_sms_budget_tells_the_duty_staff(
    api, consul, db, dispatcher, smtp
):
    """A probe's answers to texts spent the day's SMS budget: codes stopped, and nobody was
    told (only a code's or a notice's charge told the duty staff)."""
    settings = make_settings("sqlite://", sms_daily_budget=2, duty_email=["duty@mofa.test"])
    limits = RateLimits(settings)
    limits.when_budget_spent = duty_told_of_spent_budget(
        api.app.state.dispatcher.notifiers, settings
    )
    api.app.state.rate_limits = limits
    _, phone, _ = citizen(api)
    forms = [inbound_form(phone, "hello?") for _ in range(4)]
    answered = ["<Message>" in api.post(INBOUND, data=f, headers=signed(f)).text for f in forms]
    assert answered == [True, True, False, False]
    [told] = smtp.to_within("duty@mofa.test")  # told from a thread, not the webhook's
    assert "budget" in told["Subject"] and "answers to texts" in told.get_content()
    time.sleep(0.3)
    assert len(smtp.to("duty@mofa.test")) == 1  # once, not at every charge refused after


def test_a_retried_or_replayed_webhook_is_acted_on_once_and_ids_are_kept_400_days(
    api, consul, db, dispatcher
):
    """Twilio retries a webhook that timed out: the same MessageSid must not record twice, nor
    undo a later START by replaying a STOP. Its signature holds no time, so a copy replayed
    weeks later must be refused too: ids were forgotten after 7 days, and a probe's replayed
    STOP (or "1") then acted again."""
    _, phone, _ = citizen(api)
    stop = inbound_form(phone, "STOP", sid="SM" + "5" * 32)
    start = inbound_form(phone, "START", sid="SM" + "6" * 32)
    for form in (stop, start, stop):
        assert api.post(INBOUND, data=form, headers=signed(form)).status_code == 200
    db.expire_all()
    assert (
        db.scalar(select(Citizen.sms_opted_out_at).where(Citizen.phone_hash.is_not(None))) is None
    )
    assert forget_old_inbound(db, now=utcnow()) == 0
    assert forget_old_inbound(db, now=utcnow() + timedelta(days=8)) == 0
    assert api.post(INBOUND, data=stop, headers=signed(stop)).status_code == 200
    db.expire_all()
    assert (
        db.scalar(select(Citizen.sms_opted_out_at).where(Citizen.phone_hash.is_not(None))) is None
    )
    assert forget_old_inbound(db, now=utcnow() + timedelta(days=401)) == 2


def test_inbound_ids_are_kept_only_as_keyed_hashes_and_old_whole_ones_still_stop_a_replay(
    api, consul, db, dispatcher
):
    """Found by a privacy review: the inbound SMS ids were kept whole for 400 days, each heard
    at the very moment of the answer it recorded. After an erasure, a join on that moment led
    from the erased record to ids under which the provider's log holds the number and the
    words. Kept as keyed hashes now; ids an earlier release kept whole still stop a replay, and
    the hourly job hashes them."""
    _, phone, _ = citizen(api)
    sid = "SM" + "7" * 32
    safe = inbound_form(phone, "1", sid=sid)
    assert api.post(INBOUND, data=safe, headers=signed(safe)).status_code == 200
    db.expire_all()
    [kept] = db.scalars(select(InboundSms.provider_ref)).all()
    assert kept.startswith("k:") and "7777" not in kept and len(kept) <= 64
    # An earlier release's row, kept whole: its STOP replayed is not heard again.
    stop_sid = "SM" + "8" * 32
    db.add(InboundSms(provider_ref=stop_sid, received_at=utcnow()))
    db.commit()
    stop = inbound_form(phone, "STOP", sid=stop_sid)
    assert api.post(INBOUND, data=stop, headers=signed(stop)).status_code == 200
    db.expire_all()
    assert (
        db.scalar(select(Citizen.sms_opted_out_at).where(Citizen.phone_hash.is_not(None))) is None
    )
    vault = api.app.state.registry.vault
    assert hash_inbound_ids(db, vault) == 1 and hash_inbound_ids(db, vault) == 0
    db.commit()
    assert stop_sid not in db.scalars(select(InboundSms.provider_ref)).all()
    assert api.post(INBOUND, data=stop, headers=signed(stop)).status_code == 200
    db.expire_all()
    assert (
        db.scalar(select(Citizen.sms_opted_out_at).where(Citizen.phone_hash.is_not(None))) is None
    )
    assert db.scalar(select(func.count()).select_from(InboundSms)) == 2
    # A review: an id kept whole beside its own hash (an earlier release's process heard it
    # again during an upgrade) broke the unique key at every run; the whole one just goes.
    db.add(InboundSms(provider_ref=sid, received_at=utcnow()))
    db.commit()
    assert hash_inbound_ids(db, vault) == 1
    db.commit()
    kept = db.scalars(select(InboundSms.provider_ref)).all()
    assert len(kept) == 2 and all(ref.startswith("k:") for ref in kept)


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_duty_notice_that_could_not_go_is_sent_by_the_minute_job(
    api, consul, db, dispatcher, smtp, reply
):
    """No duty contact (or a relay down) when the help came: the answer remembers it was not
    told, and the duty-notices job sends it once one is there."""
    settings = api.app.state.settings
    settings.duty_email = []
    _, phone, _ = citizen(api, name="이순신")
    issue(api, consul, level=4)
    dispatcher.drain()
    reply(phone, "2")
    db.expire_all()
    checkin = db.scalar(select(Checkin))
    assert checkin.answer == "help" and checkin.duty_notified_at is None
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    settings.duty_email = ["duty@mofa.test"]
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    [notice] = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
    assert "이순신" in notice.get_body(("plain",)).get_content()
    db.expire_all()
    assert db.scalar(select(Checkin)).duty_notified_at is not None
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    assert len([m for m in smtp.received if m["To"] == "duty@mofa.test"]) == 1
    entries = db.scalars(select(AuditEntry).where(AuditEntry.actor == "system:duty-notice"))
    assert [e.action for e in entries] == ["duty notice: citizen needs help"]


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_duty_job_holder_that_lost_its_lease_sends_no_notice(
    api, consul, db, dispatcher, smtp, reply, monkeypatch
):
    """Found by a fault probe: the duty-notices job took its lease, read what waits, then sent
    and marked each notice with no look at the lease. A holder paused past its lease (SIGSTOP)
    would wake and page the duty staff again about what its successor had just paged. It asks
    before each send now, and leaves the rest untold for the successor."""
    settings = api.app.state.settings
    settings.duty_email = []
    _, phone, _ = citizen(api, name="김대기")
    issue(api, consul, level=4)
    dispatcher.drain()
    reply(phone, "2")
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    settings.duty_email = ["duty@mofa.test"]
    factory = api.app.state.session_factory
    tell = duty.tell_duty

    def overtaken_then_told(*args, **kwargs):
        # Read, then paused past the lease: another process has taken it meanwhile.
        with factory.begin() as other:
            other.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == "duty-notices")
                .values(holder="successor", expires_at=utcnow() - timedelta(seconds=1))
            )
        return tell(*args, **kwargs)

    monkeypatch.setattr(duty, "tell_duty", overtaken_then_told)
    run_duty_notices(dispatcher, factory, settings)
    assert [m for m in smtp.received if m["To"] == "duty@mofa.test"] == []
    db.expire_all()
    assert db.scalar(select(Checkin)).duty_notified_at is None  # left for the successor
    monkeypatch.setattr(duty, "tell_duty", tell)
    run_duty_notices(dispatcher, factory, settings)  # the lapsed lease is taken back
    assert len([m for m in smtp.received if m["To"] == "duty@mofa.test"]) == 1


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_notice_whose_words_cannot_be_read_still_goes(api, consul, db, dispatcher, smtp, reply):
    """One whose words cannot be opened (a damaged row, a key gone) goes with [unreadable] in
    their place: it stayed waiting, retried every minute, and the duty staff never heard that
    this person needs help. The next person is told too."""
    settings = api.app.state.settings
    settings.duty_email = []
    _, broken_phone, _ = citizen(api, name="박손상")
    _, phone, _ = citizen(api, name="최구조")
    issue(api, consul, level=4)
    dispatcher.drain()
    reply(broken_phone, "2 first")
    reply(phone, "2 second")
    db.expire_all()
    [broken_answer] = db.scalars(
        select(CheckinAnswer)
        .where(CheckinAnswer.note_sealed.is_not(None))
        .order_by(CheckinAnswer.id)
        .limit(1)
    ).all()
    db.execute(
        update(CheckinAnswer)
        .where(CheckinAnswer.id == broken_answer.id)
        .values(note_sealed=b"damaged")
    )
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    settings.duty_email = ["duty@mofa.test"]
    run_duty_notices(dispatcher, api.app.state.session_factory, settings)
    notices = [
        m.get_body(("plain",)).get_content() for m in smtp.received if m["To"] == "duty@mofa.test"
    ]
    [broken] = [n for n in notices if "박손상" in n]
    [told] = [n for n in notices if "최구조" in n]
    assert UNREADABLE in broken and "first" not in broken
    assert "second" in told and UNREADABLE not in told
    db.expire_all()
    assert not db.scalars(select(Checkin).where(Checkin.duty_notified_at.is_(None))).all()


class _DutyHook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((json.loads(body), self.headers.get("X-Anjeon-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_help_answer_is_posted_to_the_duty_webhook_signed(api, consul, db, dispatcher):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DutyHook)
    serve_in_thread(server)
    _DutyHook.received.clear()
    try:
        settings = api.app.state.settings
        settings.duty_email = []
        settings.duty_webhook_url = f"http://127.0.0.1:{server.server_address[1]}/duty"
        settings.webhook_secret = SecretStr("duty-hook-secret")
        cid, phone, _ = citizen(api)
        advisory = issue(api, consul, level=4)
        dispatcher.drain()
        form = inbound_form(phone, "도와주세요 여권 분실")
        assert api.post(INBOUND, data=form, headers=signed(form)).status_code == 200
    finally:
        server.shutdown()
    [(payload, signature)] = _DutyHook.received
    assert payload["event"] == "checkin.help" and payload["citizen_id"] == cid
    assert payload["phone"] == phone and payload["note"] == "도와주세요 여권 분실"
    assert payload["advisory_id"] == advisory and len(payload["checkin_ids"]) == 1
    assert [a["id"] for a in payload["advisories"]] == [advisory]
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert signature == "sha256=" + hmac.new(b"duty-hook-secret", body, hashlib.sha256).hexdigest()


@pytest.mark.usefixtures("app_sessions_in_test")
def test_past_the_hours_notices_the_duty_staff_get_one_summary_every_ten_minutes(
    api, consul, db, dispatcher, smtp, reply
):
    """A review: a script with many inboxes can register verified records in a crisis area and
    cry for help on each, and the duty staff were paged once per record; a real crisis pages
    as many. Past the hour's notices one by one, the rest come together, one summary at most
    every 10 minutes, naming each citizen (no name, contact or words: the console has them)."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DutyHook)
    serve_in_thread(server)
    _DutyHook.received.clear()
    settings.duty_webhook_url = f"http://127.0.0.1:{server.server_address[1]}/duty"
    hour = settings.model_copy(update={"rate_limit_duty_page": "2/hour"})
    limits = api.app.state.rate_limits = RateLimits(hour, namespace=f"t{time.time_ns()}")
    factory = api.app.state.session_factory
    people = [citizen(api, name=f"Person {n}") for n in range(4)]
    _, wrote, _ = citizen(api, location={"lat": 48.85, "lon": 2.35})  # Paris: not asked
    advisory = issue(api, consul, level=4)
    dispatcher.drain()

    def mails() -> list[tuple[str, str]]:
        duty = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
        return [(m["Subject"], m.get_body(("plain",)).get_content()) for m in duty]

    try:
        for _, phone, _ in people[:3]:
            reply(phone, "2 trapped")
        assert len(mails()) == 3  # two one by one, the third in a summary at once
        subject, text = mails()[2]
        assert subject.endswith("NEED HELP: 1 citizen (summary)")
        assert people[2][0] in text and advisory in text and "/console/" in text
        assert "Person 2" not in text and people[2][1] not in text and "trapped" not in text
        reply(people[3][1], "2 trapped")  # within the summary's 10 minutes: waits
        reply(wrote, "2 alone at the station")  # a help message, no check-in open
        db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
        db.execute(update(HelpMessage).values(received_at=utcnow() - timedelta(minutes=2)))
        run_duty_notices(dispatcher, factory, settings, limits)
        assert len(mails()) == 3
        db.expire_all()
        untold = select(func.count()).where(Checkin.duty_notified_at.is_(None))
        assert db.scalar(untold.select_from(Checkin)) == 1  # waiting, not dropped
        limits.give_back(Rule.DUTY_SUMMARY, "duty", taken_s_ago=0)  # 10 minutes pass
        run_duty_notices(dispatcher, factory, settings, limits)
        subject, text = mails()[3]
        assert subject.endswith("NEED HELP: 2 citizens (summary)")
        assert people[3][0] in text and "a help message, no check-in open" in text
        db.expire_all()
        assert db.scalar(untold.select_from(Checkin)) == 0
        assert db.scalar(select(func.count(HelpMessage.id)).where(_untold_message)) == 0
        run_duty_notices(dispatcher, factory, settings, limits)
        assert len(mails()) == 4  # nothing twice
    finally:
        server.shutdown()
    summaries = [payload for payload, _ in _DutyHook.received if payload["event"] == "help.summary"]
    assert [s["count"] for s in summaries] == [1, 2]
    assert {c["citizen_id"] for c in summaries[1]["citizens"]} == {
        people[3][0],
        db.scalar(
            select(Citizen.public_id).join(HelpMessage, HelpMessage.citizen_id == Citizen.id)
        ),
    }


_untold_message = HelpMessage.duty_notified_at.is_(None)


def _duty_hour(api, per_hour: str) -> RateLimits:
    """The app's rate limits with `per_hour` duty notices one by one, in a storage of their
    own."""
    hour = api.app.state.settings.model_copy(update={"rate_limit_duty_page": per_hour})
    limits = api.app.state.rate_limits = RateLimits(hour, namespace=f"t{time.time_ns()}")
    return limits


def test_a_verified_phone_makes_a_record_established_whatever_channels_it_chose(api, db):
    """A review: "established" read "SMS chosen", so a verified phone whose owner chose
    e-mail alerts counted as a record anyone can make. The number is kept only once verified:
    it is what counts, or a day's standing."""
    now = utcnow()
    by_phone, _, _ = citizen(api, channels=("email",))
    no_phone, _, _ = register(api, location=TOKYO, channels=["email"], phone=None)
    db.expire_all()
    records = {c.public_id: c for c in db.scalars(select(Citizen))}
    assert records[by_phone].notify_sms is False and records[by_phone].phone_hash is not None
    assert established(records[by_phone], now) and not established(records[no_phone], now)
    assert established(records[no_phone], now + ESTABLISHED_AFTER + timedelta(minutes=1))
    in_sql = dict(db.execute(select(Citizen.public_id, is_established(now))).all())
    assert in_sql == {by_phone: True, no_phone: False}


@pytest.mark.usefixtures("app_sessions_in_test")
def test_cries_from_new_records_with_no_verified_phone_have_a_part_of_the_hour(
    api, consul, db, dispatcher, smtp, reply
):
    """Found by a probe: e-mail-only records verified in minutes through a catch-all domain,
    placed in a crisis, each pressed "help" on its link: they spent the hour's notices one by
    one, put their own words before the duty staff, and a real citizen's "2" waited for the
    next summary. Cries from a record with no verified phone, verified less than a day ago,
    now have a part of the hour (rate_limit_duty_page_new), their notices say so, and past it
    they go in the summary, after the established citizens' cries."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    hour = settings.model_copy(
        update={"rate_limit_duty_page": "3/hour", "rate_limit_duty_page_new": "1/hour"}
    )
    limits = api.app.state.rate_limits = RateLimits(hour, namespace=f"t{time.time_ns()}")

    def e_mail_only(name: str) -> tuple[str, str]:
        cid, _, body = register(api, location=TOKYO, channels=["email"], phone=None, name=name)
        return cid, body["email"]

    bots = [e_mail_only(f"Bot {n}") for n in range(3)]
    kept_id, kept_email = e_mail_only("Kept Record")
    db.execute(
        update(Citizen)
        .where(Citizen.public_id == kept_id)
        .values(verified_at=utcnow() - ESTABLISHED_AFTER - timedelta(minutes=1))
    )
    _, phone, _ = citizen(api, name="Real Person")
    late_id, late_phone, _ = citizen(api, name="Late Person")
    issue(api, consul, level=4)
    dispatcher.drain()

    def press_help(email: str, note: str) -> None:
        [token] = {
            link.group(1)
            for m in smtp.to(email)
            if (link := _LINK.search(m.get_body(("plain",)).get_content()))
        }
        answered = api.post(f"/c/{token}", data={"answer": "help", "note": note})
        assert answered.status_code == 200, answered.text

    def mails() -> list[tuple[str, str]]:
        duty = smtp.to("duty@mofa.test")
        return [(m["Subject"], m.get_body(("plain",)).get_content()) for m in duty]

    for _, email in bots:
        press_help(email, "call +1 900 555 0100 now")
    press_help(kept_email, "lost in the old town")
    reply(phone, "2 trapped")
    summaries = [(subject, text) for subject, text in mails() if subject.endswith("(summary)")]
    notices = [text for subject, text in mails() if not subject.endswith("(summary)")]
    # The first bot within the new records' part, marked; the second in a summary at once;
    # the third waits for the next. The kept record and the real citizen keep their own.
    assert len(notices) == 3
    [bot_notice] = [text for text in notices if "Bot 0" in text]
    assert "Record: new, with no verified phone" in bot_notice
    assert any("Kept Record" in t and "Record: new" not in t for t in notices)
    assert any("Real Person" in t and "trapped" in t and "Record: new" not in t for t in notices)
    [(subject, summary)] = summaries
    assert subject.endswith("NEED HELP: 1 citizen (summary)")
    assert bots[1][0] in summary and "(a new record with no verified phone)" in summary
    assert "900 555" not in summary and "Bot" not in summary  # no words, no names

    reply(late_phone, "2 hurt")  # past the hour's three: waits for the next summary
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    limits.give_back(Rule.DUTY_SUMMARY, "duty", taken_s_ago=0)  # 10 minutes pass
    run_duty_notices(dispatcher, api.app.state.session_factory, settings, limits)
    subject, summary = mails()[-1]
    assert subject.endswith("NEED HELP: 2 citizens (summary)")
    # The established citizen's line before the new record's, whatever their times.
    assert summary.index(late_id) < summary.index(bots[2][0])
    db.expire_all()
    untold = select(func.count()).where(Checkin.duty_notified_at.is_(None))
    assert db.scalar(untold.select_from(Checkin)) == 0


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_relay_down_spends_none_of_the_hour_and_a_drill_none_of_the_real_one(
    api, consul, db, dispatcher, smtp, reply
):
    """A review: a notice that could not go still spent the hour's count (a short relay outage
    spent the hour, and everyone after it came only in a summary), and a drill's notices and
    summary held up a real cry's."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    limits = _duty_hour(api, "1/hour")
    factory = api.app.state.session_factory
    _, drilled, _ = citizen(api, exercises=True)
    _, other, _ = citizen(api, exercises=True)
    _, real, _ = citizen(api)
    issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    smtp.script("duty@mofa.test", *["451 try again later"] * 3)  # the relay is down
    reply(drilled, "2 drill")
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    run_duty_notices(dispatcher, factory, settings, limits)
    run_duty_notices(dispatcher, factory, settings, limits)
    assert smtp.to("duty@mofa.test") == []
    run_duty_notices(dispatcher, factory, settings, limits)  # the relay is back
    [drill] = smtp.to("duty@mofa.test")
    assert drill["Subject"].startswith("[EXERCISE]") and "summary" not in drill["Subject"]
    reply(other, "2 drill")  # past the drills' hour: a drill summary at once
    assert smtp.to("duty@mofa.test")[-1]["Subject"].endswith("1 citizen (summary)")
    issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    dispatcher.drain()
    reply(real, "2 trapped")  # the real hour is untouched by the drill's
    [*_, page] = smtp.to("duty@mofa.test")
    assert "summary" not in page["Subject"] and "trapped" in page.get_body(("plain",)).get_content()


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_summary_takes_every_cry_untold_the_earliest_first(
    api, consul, db, dispatcher, smtp, reply, monkeypatch
):
    """A review: a summary took only the minute job's batch (100, by row id), so past the hour
    at most 100 cries went every 10 minutes, and a citizen whose row was old (a script's
    record crying again) always went before a newer one's first cry."""
    settings = api.app.state.settings
    settings.duty_email = ["duty@mofa.test"]
    limits = _duty_hour(api, "1/hour")
    monkeypatch.setattr(duty, "SUMMARY_MOST", 2)
    people = [citizen(api) for _ in range(4)]
    issue(api, consul, level=4)
    dispatcher.drain()
    limits.take(Rule.DUTY_SUMMARY, "duty")  # a summary went a moment ago
    for _, phone, _ in people:
        reply(phone, "2")  # the first one by one; the rest wait for the summary
    db.expire_all()
    first_row = db.scalar(select(func.min(Checkin.id)).where(Checkin.duty_notified_at.is_(None)))
    db.execute(update(Checkin).where(Checkin.id == first_row).values(answered_at=utcnow()))
    db.execute(
        update(Checkin)
        .where(Checkin.id != first_row)
        .values(answered_at=utcnow() - timedelta(minutes=2))
    )
    limits.give_back(Rule.DUTY_SUMMARY, "duty", taken_s_ago=0)
    # The minute job's batch is one cry; its summary takes the earliest two untold.
    assert (
        duty.tell_duty(
            api.app.state.session_factory,
            vault=api.app.state.registry.vault,
            notifiers=dispatcher.notifiers,
            settings=settings,
            checkin_ids=[first_row],
            now=utcnow(),
            limits=limits,
        )
        == 2
    )
    db.expire_all()
    [(untold,)] = db.execute(select(Checkin.id).where(Checkin.duty_notified_at.is_(None))).all()
    assert untold == first_row  # answered last: the next summary's


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_storage_that_does_not_answer_is_asked_once_a_run_and_every_notice_goes(
    api, consul, db, dispatcher, smtp, reply
):
    """A review: each notice asked the storage and waited for its timeout (a run of a hundred
    would outlast the minute job's lease). The first failure lets the run's notices go
    uncounted."""
    settings = api.app.state.settings
    settings.duty_email = []
    people = [citizen(api) for _ in range(3)]
    new_id, _, body = register(api, location=TOKYO, channels=["email"], phone=None)
    issue(api, consul, level=4)
    dispatcher.drain()
    for _, phone, _ in people:
        reply(phone, "2")
    [token] = {
        link.group(1)
        for m in smtp.to(body["email"])
        if (link := _LINK.search(m.get_body(("plain",)).get_content()))
    }
    assert api.post(f"/c/{token}", data={"answer": "help"}).status_code == 200
    db.execute(update(Checkin).values(answered_at=utcnow() - timedelta(minutes=2)))
    settings.duty_email = ["duty@mofa.test"]
    down = settings.model_copy(update={"rate_limit_storage": "redis://127.0.0.1:9/0"})
    limits = RateLimits(down)
    asked = []
    take = limits.take
    limits.take = lambda *hit: asked.append(hit) or take(*hit)  # type: ignore[method-assign]
    run_duty_notices(dispatcher, api.app.state.session_factory, settings, limits)
    subjects = [str(m["Subject"]) for m in smtp.to("duty@mofa.test")]
    # The established citizens' notices go uncounted; a new record's cry, which only a part
    # of the hour may have, goes in the summary while nothing can be counted (a review: every
    # new record had a notice of its own for as long as the outage lasted).
    assert sum("(summary)" not in subject for subject in subjects) == 3
    [summary] = [m for m in smtp.to("duty@mofa.test") if "(summary)" in str(m["Subject"])]
    assert new_id in summary.get_body(("plain",)).get_content()
    assert len(asked) == 1


def test_erasure_takes_the_citizens_own_words_and_a_waiting_help_notice(
    api, consul, db, dispatcher
):
    api.app.state.settings.duty_email = []  # the notice cannot go: it waits
    cid, phone, _ = citizen(api)
    issue(api, consul, level=4)
    dispatcher.drain()
    form = inbound_form(phone, "2 broken leg at the Hotel Sakura")
    api.post(INBOUND, data=form, headers=signed(form))
    [given] = answers_of(db, cid)
    assert given.note_sealed is not None
    db.expire_all()
    erase_citizen(db, citizen=db.scalar(select(Citizen).where(Citizen.public_id == cid)))
    [kept] = answers_of(db, cid)
    assert kept.note_sealed is None and kept.answer == "help"
    assert db.scalar(select(Checkin.duty_notified_at)) is not None


def test_a_real_check_in_comes_before_a_drill_when_a_reply_comes(
    api, consul, db, dispatcher, reply
):
    """A cry for help is never filed under an exercise sent after the real alert."""
    cid, phone, _ = citizen(api, exercises=True)
    real = issue(api, consul, level=4)
    dispatcher.drain()
    issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    reply(phone, "2")
    [given] = answers_of(db, cid)
    assert db.get(Advisory, given.advisory_id).public_id == real


def test_a_real_check_in_behind_fifty_routine_alerts_still_takes_the_cry_for_help(
    api, consul, db, dispatcher, reply
):
    """A probe: the open check-ins were read from the citizen's newest 50 alerts before those
    that asked were picked out, so 50 level-1 alerts after a real level 3 pushed it out, and
    the cry for help that followed a drill was filed under the drill (the real roll call kept
    saying safe, the duty page said exercise)."""
    dispatcher.policy = dataclasses.replace(dispatcher.policy, routine_per_hour=0)
    cid, phone, _ = citizen(api, exercises=True, quiet_hours=None)
    real = issue(api, consul, level=3)
    dispatcher.drain()
    for n in range(50):
        issue(api, consul, level=1, title={"ko": f"주의 {n}", "en": f"Notice {n}"})
    dispatcher.drain()
    issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    reply(phone, "2 trapped, building collapsed")
    [given] = answers_of(db, cid)
    assert db.get(Advisory, given.advisory_id).public_id == real


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_page_help_counts_for_every_real_advisory_that_asked_and_a_drills_for_itself(
    api, consul, db, dispatcher, twilio, smtp
):
    """As an SMS answer: "I need help" pressed on one advisory's page counts for the other
    open one too (before, its roll call said no_answer and its reminders kept asking). A safe
    on a drill's page answers the drill only, and a real page never answers a drill."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api, exercises=True)
    first = issue(api, consul, level=3, title={"ko": "시위", "en": "Protests"})
    second = issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    drill = issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()

    def token_of(title: str) -> str:
        [sms] = [b for b in twilio.bodies_to(phone) if title in b]
        return CHECKIN_LINK.search(sms).group(1)

    def standing(advisory: str) -> list[tuple[str, str, str | None]]:
        roll = api.get(f"/v1/advisories/{advisory}/rollcall", headers=consul).json()
        return [(i["citizen_id"], i["answer"], i["channel"]) for i in roll["items"]]

    page = api.post(f"/c/{token_of('시위')}", data={"answer": "help", "note": "flooded in"})
    assert page.status_code == 200
    assert "영사 당직자에게 알렸습니다" in page.text  # a duty address is set: they were paged
    assert standing(first) == standing(second) == [(cid, "help", "web")]
    assert standing(drill) == [(cid, "no_answer", None)]
    [notice] = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
    assert "Advisories (2;" in notice.get_body(("plain",)).get_content()

    assert api.post(f"/c/{token_of('훈련')}", data={"answer": "safe"}).status_code == 200
    assert standing(drill) == [(cid, "safe", "web")]
    assert standing(first) == standing(second) == [(cid, "help", "web")]

    # A safe on a page answers that advisory only, and does not end a help in force there
    # either: a forwarded or leaked link must not clear a cry for help. It is kept and shown
    # beside the help, for a consul to confirm.
    link = f"/c/{token_of('시위')}"
    page = api.post(link, data={"answer": "safe", "note": "all fine"})
    assert page.status_code == 200 and "영사 직원이 연락해 확인할 때까지" in page.text
    assert standing(first) == standing(second) == [(cid, "help", "web")]
    said = {
        advisory: api.get(f"/v1/advisories/{advisory}/rollcall", headers=consul).json()["items"][0]
        for advisory in (first, second)
    }
    assert said[first]["safe_said_at"] is not None and said[second]["safe_said_at"] is None
    assert "그 뒤 안전하다고 답하셨습니다" in api.get(link).text
    # Whoever holds the link can press "safe" 20 times an hour at most, and never lock the
    # citizen out of asking for help.
    pressed = [api.post(link, data={"answer": "safe"}).status_code for _ in range(20)]
    assert pressed.count(200) == 18 and pressed[-2:] == [429, 429]  # 2 of 20 given above
    assert api.post(link, data={"answer": "help", "note": "please"}).status_code == 200
    assert standing(first) == standing(second) == [(cid, "help", "web")]


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_help_pressed_on_a_drills_page_during_a_real_crisis_is_a_real_cry_for_help(
    api, consul, db, dispatcher, twilio, smtp
):
    """A probe pressed "I need help" (REAL: building collapsed) on a drill's link while two
    real check-ins were open: it was filed under the drill alone, the real roll calls said
    no_answer and the duty notice said [EXERCISE]. It now answers the real ones too, as an
    SMS "2" does, and the duty staff get a real notice."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api, exercises=True)
    quake = issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    drill = issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    [sms] = [b for b in twilio.bodies_to(phone) if "훈련" in b]
    link = f"/c/{CHECKIN_LINK.search(sms).group(1)}"

    def standing(advisory: str) -> list[tuple[str, str, str | None]]:
        roll = api.get(f"/v1/advisories/{advisory}/rollcall", headers=consul).json()
        return [(i["citizen_id"], i["answer"], i["channel"]) for i in roll["items"]]

    # A safe on the drill's page answers the drill alone.
    assert api.post(link, data={"answer": "safe"}).status_code == 200
    assert standing(quake) == [(cid, "no_answer", None)]
    page = api.post(link, data={"answer": "help", "note": "REAL: building collapsed"})
    assert page.status_code == 200
    assert standing(quake) == [(cid, "help", "web")]
    assert standing(drill) == [(cid, "help", "web")]
    notices = [
        m.get_body(("plain",)).get_content() for m in smtp.received if m["To"] == "duty@mofa.test"
    ]
    [real] = [text for text in notices if not text.startswith("[EXERCISE]")]
    assert "REAL: building collapsed" in real and "Earthquake" in real


@pytest.mark.usefixtures("app_sessions_in_test")
def test_a_help_on_a_drills_page_past_its_hourly_answers_still_answers_a_real_check_in(
    api, consul, db, dispatcher, twilio, smtp
):
    """A review: past the link's 20 answers an hour, a help only added its words to the
    drill's answer, so a real check-in opened since still said "no answer"."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api, exercises=True)
    drill = issue(api, consul, level=4, exercise=True, title={"ko": "훈련", "en": "Drill"})
    dispatcher.drain()
    [sms] = twilio.bodies_to(phone)
    link = f"/c/{CHECKIN_LINK.search(sms).group(1)}"
    for n in range(MAX_ANSWERS):
        assert api.post(link, data={"answer": "help", "note": f"drill {n}"}).status_code == 200
    quake = issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    dispatcher.drain()
    roll = api.get(f"/v1/advisories/{quake}/rollcall", headers=consul).json()
    assert [(i["citizen_id"], i["answer"]) for i in roll["items"]] == [(cid, "no_answer")]
    page = api.post(link, data={"answer": "help", "note": "REAL: building collapsed"})
    assert page.status_code == 200
    roll = api.get(f"/v1/advisories/{quake}/rollcall", headers=consul).json()
    assert [(i["citizen_id"], i["answer"], i["channel"]) for i in roll["items"]] == [
        (cid, "help", "web")
    ]
    drill_roll = api.get(f"/v1/advisories/{drill}/rollcall", headers=consul).json()
    assert [i["answer"] for i in drill_roll["items"]] == ["help"]
    notices = [
        m.get_body(("plain",)).get_content() for m in smtp.received if m["To"] == "duty@mofa.test"
    ]
    assert any(
        "REAL: building collapsed" in text and not text.startswith("[EXERCISE]") for text in notices
    )


@pytest.mark.usefixtures("app_sessions_in_test")
def test_one_sms_answer_counts_for_every_advisory_that_asked(
    api, consul, db, dispatcher, reply, smtp
):
    """Two advisories over one city both ask "are you safe?" in the same second; the SMS
    reply names neither. Before, it counted for the newest only: the other roll call kept the
    citizen as no_answer and its reminders went on asking."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    cid, phone, _ = citizen(api)
    first = issue(api, consul, level=3, title={"ko": "시위", "en": "Protests"})
    second = issue(api, consul, level=4, title={"ko": "지진", "en": "Earthquake"})
    dispatcher.drain()
    reply(phone, "1 안전합니다")
    for advisory in (first, second):
        roll = api.get(f"/v1/advisories/{advisory}/rollcall", headers=consul).json()
        assert [(i["citizen_id"], i["answer"]) for i in roll["items"]] == [(cid, "safe")]
    reply(phone, "2 our hotel is flooded")
    # One person to call: one notice, naming both advisories (before: two notices).
    [notice] = [m for m in smtp.received if m["To"] == "duty@mofa.test"]
    text = notice.get_body(("plain",)).get_content()
    assert "Advisories (2; their one answer counts for each):" in text
    assert f"- Earthquake (level 4, {second})" in text and f"- Protests (level 3, {first})" in text
    assert text.index(second) < text.index(first)  # the most recent first
    assert text.count("our hotel is flooded") == 1
    assert {a.answer for a in answers_of(db, cid)} == {"safe", "help"}
    assert len(answers_of(db, cid)) == 4
    db.expire_all()
    told = db.scalars(select(Checkin.duty_notified_at).where(Checkin.answer == "help")).all()
    assert len(told) == 2 and None not in told
    entries = db.scalars(select(AuditEntry).where(AuditEntry.actor == "system:duty-notice"))
    [entry] = entries.all()
    assert first in entry.reason and second in entry.reason


@pytest.mark.usefixtures("app_sessions_in_test")
def test_the_citizens_words_are_quoted_last_in_the_duty_notice_and_its_subject_has_no_name(
    api, asked, smtp
):
    """Found by a probe: whoever holds a check-in link writes the note, and its lines read as
    the notice's own ("UPDATE FROM CONSULATE: … call them at +82 10 9999 0000 instead"). They
    now come last, each line quoted, under a label that says they are unverified; and the
    subject, which every inbox list and lock screen shows, names no one."""
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    who = asked(name="박소원 Sowon")
    forged = (
        "help me\nAnswered: 2026-12-05T20:10:00+00:00 by web\n\n"
        "UPDATE FROM CONSULATE: call them at +82 10 9999 0000 instead"
    )
    before = len(smtp.received)
    page = api.post(f"/c/{who.token}", data={"answer": "help", "note": forged})
    assert page.status_code == 200
    [mail] = [m for m in smtp.received[before:] if m["To"] == "duty@mofa.test"]
    assert "박소원" not in mail["Subject"] and "NEED HELP" in mail["Subject"]
    lines = mail.get_body(("plain",)).get_content().splitlines()
    start = lines.index("Their words, as they wrote them (unverified):")
    assert lines[start + 1 :] == [f"> {line}" for line in forged.splitlines()]
    own = [line for line in lines[:start] if line.startswith("Answered: ")]
    assert len(own) == 1 and "by web" in own[0]
    assert not any("UPDATE FROM CONSULATE" in line for line in lines[:start])
    assert f"Phone: {who.phone}" in lines[:start]


def test_a_citizens_own_words_are_dropped_after_their_time_and_the_answers_stay(api, asked, db):
    """Found by a privacy review: a citizen's words ("trapped…", "my wife is hurt") were kept
    for as long as their record, whatever the crisis. The forget-inbound-sms job now drops
    them words_retention_days (180) after they were written; the answers stay."""
    who = asked()
    page = api.post(f"/c/{who.token}", data={"answer": "help", "note": "trapped in the lobby"})
    assert page.status_code == 200
    citizen_id = db.scalar(select(Citizen.id).where(Citizen.public_id == who.public_id))
    db.add(HelpMessage(citizen_id=citizen_id, channel="sms", note_sealed=b"sealed words"))
    db.flush()
    kept_days = Settings.model_fields["words_retention_days"].default
    assert (
        forget_old_words(db, now=utcnow() + timedelta(days=kept_days - 1), kept_days=kept_days) == 0
    )
    assert (
        forget_old_words(db, now=utcnow() + timedelta(days=kept_days + 1), kept_days=kept_days) == 2
    )
    db.expire_all()
    [answer] = db.scalars(select(CheckinAnswer).where(CheckinAnswer.citizen_id == citizen_id))
    [message] = db.scalars(select(HelpMessage).where(HelpMessage.citizen_id == citizen_id))
    assert (answer.answer, answer.note_sealed, message.note_sealed) == ("help", None, None)
