"""An anonymous caller against the check-in endpoints: what can they make us send, store, reveal
or spend? Twilio's inbound webhook (unsigned, forged, re-pointed, oversized, crafted bodies),
the /c/{token} page (malformed, foreign and erased tokens, oversized notes, answer floods,
what the HTML shows) and the roll call (keys, roles, parameters, masking)."""

import base64
import hashlib
import hmac
import json
import logging
import re
import time as clock
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from twilio.request_validator import RequestValidator

from service.advisories.models import Advisory
from service.checkin import router as checkin_router
from service.checkin.answers import NOTE_MAX
from service.checkin.models import Checkin, CheckinAnswer
from service.checkin.page import MAX_ANSWERS
from service.checkin.replies import answer_text, classify, unmatched_text
from service.citizens.models import Citizen
from service.citizens.overview import SAID_SHOWN
from service.db import utcnow
from service.dispatch.checkin_tokens import CheckinTokens
from service.forms import FORM_FIELDS_MAX, PAGE_FORM_BYTES
from service.ledger.models import Alert
from service.privacy import UNREADABLE
from tests.checkin.conftest import INBOUND, PUBLIC, inbound_form, signed
from tests.conftest import WarningRecords, bound_client, make_settings
from tests.dispatch.fake_twilio import AUTH_TOKEN

# A help answer's duty notice (work done after the response) runs in the test's transaction.
pytestmark = pytest.mark.usefixtures("app_sessions_in_test")

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Test set-ups page no duty staff (no ANJEON_DUTY_EMAIL): a help's answer says so.
KNOWN_ANSWERS = {
    answer_text(k, lang, duty_paged=False)
    for k in ("safe", "help", "unknown")
    for lang in ("ko", "en")
}
KNOWN_ANSWERS.add(unmatched_text())


def stored(db) -> int:
    return db.scalar(select(func.count()).select_from(CheckinAnswer)) or 0


def citizen_row(db, public_id: str) -> Citizen:
    row = db.scalar(select(Citizen).where(Citizen.public_id == public_id))
    db.refresh(row)
    return row


def signature(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, form)


def twiml_messages(response) -> list[str]:
    """The texts of a well-formed TwiML answer (parsing fails on malformed XML)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    assert [child.tag for child in root] in ([], ["Message"]), response.text
    return [child.text or "" for child in root]


def not_twiml(response) -> None:
    """A refusal is a problem document, never TwiML that Twilio would act on (send)."""
    assert not response.headers["content-type"].startswith(("application/xml", "text/xml"))
    assert "<Message" not in response.text and "<Response" not in response.text


def token_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def signed_token(
    api, *, citizen_id: int, advisory_id: int, version: bytes = b"\x01", days: int = 1
) -> str:
    """A token signed with the service's real check-in key (what only we can make)."""
    key = CheckinTokens(api.app.state.registry.vault.link_key)._key
    expiry = int((utcnow() + timedelta(days=days)).timestamp())
    body = version + leb128(citizen_id) + leb128(advisory_id) + expiry.to_bytes(4, "big")
    return b64(body + hmac.new(key, body, hashlib.sha256).digest()[:12])


def ids_of(db, who) -> tuple[int, int]:
    citizen = db.scalar(select(Citizen.id).where(Citizen.public_id == who.public_id))
    advisory = db.scalar(select(Advisory.id).where(Advisory.public_id == who.advisory))
    return citizen, advisory


# ---- the inbound SMS webhook -----------------------------------------------------------------


def test_unsigned_or_forged_inbound_is_403_and_changes_nothing(api, db, asked, twilio):
    who = asked()
    sent_before = len(twilio.bodies_to(who.phone))
    for body in ("2 help", "1", "STOP"):
        form = inbound_form(who.phone, body)
        forged = {
            "no signature": FORM,
            "empty signature": {**FORM, "X-Twilio-Signature": ""},
            "random signature": {**FORM, "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJlIGF0IGFsbA="},
            "another account's token": {
                **FORM,
                "X-Twilio-Signature": signature(PUBLIC + INBOUND, form, "f" * 32),
            },
            "signature of the empty form": {
                **FORM,
                "X-Twilio-Signature": signature(PUBLIC + INBOUND, {}),
            },
        }
        for what, headers in forged.items():
            response = api.post(INBOUND, data=form, headers=headers)
            assert response.status_code == 403, f"{body!r}, {what}: {response.text}"
            not_twiml(response)
    assert stored(db) == 0
    assert citizen_row(db, who.public_id).sms_opted_out_at is None
    assert len(twilio.bodies_to(who.phone)) == sent_before


def test_a_genuine_signature_does_not_cover_other_fields(api, db, asked):
    who = asked()
    other = asked()
    form = inbound_form(who.phone, "1")
    headers = signed(form)
    for changed in (
        {**form, "Body": "2"},
        {**form, "From": other.phone},
        {**form, "Extra": "1"},
        {k: v for k, v in form.items() if k != "AccountSid"},
    ):
        response = api.post(INBOUND, data=changed, headers=headers)
        assert response.status_code == 403, changed
    # Sent twice, the last value is the one read: appending a field re-signs nothing.
    raw = "&".join(f"{k}={v}" for k, v in {**form, "Body": "1"}.items()).replace("+", "%2B")
    response = api.post(INBOUND, content=raw + "&Body=2", headers=headers)
    assert response.status_code == 403
    assert stored(db) == 0


def test_a_signature_over_another_url_is_403(api, db, asked):
    who = asked()
    form = inbound_form(who.phone, "2 help")
    elsewhere = {
        "the status callback's path": (PUBLIC + "/v1/webhooks/twilio/status", INBOUND),
        "another host": ("https://evil.test" + INBOUND, INBOUND),
        "plain http": ("http://anjeon.test" + INBOUND, INBOUND),
        "a query it was not posted with": (PUBLIC + INBOUND + "?x=1", INBOUND),
        "no query, posted with one": (PUBLIC + INBOUND, INBOUND + "?x=1"),
        "another query": (PUBLIC + INBOUND + "?x=1", INBOUND + "?x=2"),
    }
    for what, (signed_url, posted_to) in elsewhere.items():
        headers = {**FORM, "X-Twilio-Signature": signature(signed_url, form)}
        response = api.post(posted_to, data=form, headers=headers)
        assert response.status_code == 403, f"{what}: {response.status_code} {response.text}"
        not_twiml(response)
    assert stored(db) == 0
    # The check is of the exact URL, query included: the same query signed and posted is heard.
    headers = {**FORM, "X-Twilio-Signature": signature(PUBLIC + INBOUND + "?x=1", form)}
    response = api.post(INBOUND + "?x=1", data=form, headers=headers)
    assert twiml_messages(response) == [answer_text("help", "ko", duty_paged=False)]
    assert stored(db) == 1


def test_an_inbound_message_replayed_to_the_status_callback_is_refused(api, db, asked):
    who = asked()
    form = inbound_form(who.phone, "1")
    alerts_before = [(a.id, a.status) for a in db.scalars(select(Alert).order_by(Alert.id))]
    response = api.post("/v1/webhooks/twilio/status", data=form, headers=signed(form))
    assert response.status_code == 403
    db.expire_all()
    assert [(a.id, a.status) for a in db.scalars(select(Alert).order_by(Alert.id))] == (
        alerts_before
    )
    assert stored(db) == 0


def test_a_body_over_the_limit_is_413_even_when_signed(api, db, asked):
    who = asked()
    limit = api.app.state.settings.max_body_bytes
    form = inbound_form(who.phone, "1 " + "a" * limit)
    response = api.post(INBOUND, data=form, headers=signed(form))
    assert response.status_code == 413, response.status_code
    assert response.json()["status"] == 413

    # Chunked, with no length declared: counted as it arrives.
    def chunks():
        yield b"From=" + who.phone.replace("+", "%2B").encode() + b"&Body=1+"
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536

    response = api.post(INBOUND, content=chunks(), headers=FORM)
    assert response.status_code == 413
    assert stored(db) == 0


CRAFTED = [
    "1 <Message>free SMS</Message>",
    "2 ]]><Redirect>https://evil.test/twiml</Redirect>",
    "1 & 2 &amp; &lt; &#0; &#x1F;",
    '<?xml version="1.0"?><Response><Dial>+19005551234</Dial></Response>',
    "<![CDATA[1]]>",
    "</Message></Response><Response><Message>injected",
    "1 \x00\x01\x1b",
    "safe \"quoted\" 'single' ]]> < > &",
]


def test_crafted_xml_in_a_reply_keeps_the_twiml_well_formed(api, db, asked, reply):
    who = asked(language="en")
    for body in CRAFTED:
        for sender in (who.phone, "+15005550001"):
            response = reply(sender, body)
            messages = twiml_messages(response)
            assert len(messages) == 1, f"{body!r}: {response.text}"
            # Only our own texts, never the citizen's words, go back out.
            assert messages[0] in KNOWN_ANSWERS, f"{body!r}: {messages[0]}"
    kinds = [a.answer for a in db.scalars(select(CheckinAnswer).order_by(CheckinAnswer.id))]
    # The citizen's crafted bodies that read as answers were recorded, the stranger's were not.
    readings = [classify(body).kind for body in CRAFTED]
    assert kinds == [kind for kind in readings if kind in ("safe", "help")]
    assert kinds  # some did


def test_a_signed_message_missing_from_or_body_stores_nothing(api, db, asked):
    who = asked()
    for drop in ("From", "Body"):
        form = {k: v for k, v in inbound_form(who.phone, "1").items() if k != drop}
        messages = twiml_messages(api.post(INBOUND, data=form, headers=signed(form)))
        if drop == "From":
            assert messages == [unmatched_text()]
        else:
            assert messages == [answer_text("unknown", "ko")]
    assert stored(db) == 0


def test_a_replayed_inbound_message_records_nothing_new(api, db, asked):
    who = asked()
    need_help = inbound_form(who.phone, "2 help", sid="SM" + "1" * 32)
    safe_again = inbound_form(who.phone, "1", sid="SM" + "2" * 32)
    for form in (safe_again, need_help):
        assert api.post(INBOUND, data=form, headers=signed(form)).status_code == 200
    # The earlier "1", captured and sent again byte for byte (or retried by the provider):
    # acted on once, answered once.
    replay = api.post(INBOUND, data=safe_again, headers=signed(safe_again))
    assert twiml_messages(replay) == []
    assert stored(db) == 2
    assert db.scalar(select(Checkin.answer)) == "help"
    # A replayed STOP opts nobody out again after a START.
    stop, start = inbound_form(who.phone, "STOP"), inbound_form(who.phone, "START")
    for form in (stop, start, stop):
        assert twiml_messages(api.post(INBOUND, data=form, headers=signed(form))) == []
    assert citizen_row(db, who.public_id).sms_opted_out_at is None


def test_a_replay_whose_fields_are_re_cut_is_refused(api, db, asked):
    """Found by a probe: the signature covers the fields joined with nothing between them, so
    "MessageSid=SM…&NumMedia=0" signs as "MessageSid=SM…NumMedia0". A copy of a citizen's
    earlier "1", re-cut so, carried a new id past the replay guard and answered "safe" over
    their "2 help" (and an old STOP undid their START). An id not in Twilio's shape is now a
    403, on the inbound and the status webhook alike."""
    who = asked()
    safe = inbound_form(who.phone, "1", sid="SM" + "3" * 32)
    signature = signed(safe)
    need_help = inbound_form(who.phone, "2 trapped in room 1204")
    for form, headers in ((safe, signature), (need_help, signed(need_help))):
        assert api.post(INBOUND, data=form, headers=headers).status_code == 200
    re_cut = {k: v for k, v in safe.items() if k != "NumMedia"}
    re_cut["MessageSid"] += "NumMedia0"
    assert signed(re_cut) == signature  # the very signature of the genuine "1"
    refused = api.post(INBOUND, data=re_cut, headers=signature)
    assert refused.status_code == 403, refused.text
    assert "MessageSid" in refused.json()["detail"]
    assert stored(db) == 2
    assert db.scalar(select(Checkin.answer)) == "help"
    report = {"MessageSid": "SM" + "4" * 32, "MessageStatus": "delivered", "SmsStatus": "sent"}
    re_cut_report = {"MessageSid": report["MessageSid"] + "MessageStatusdelivered"}
    re_cut_report["SmsStatus"] = "sent"
    status_path = "/v1/webhooks/twilio/status"
    assert signed(re_cut_report, status_path) == signed(report, status_path)
    refused = api.post(status_path, data=re_cut_report, headers=signed(report, status_path))
    assert refused.status_code == 403 and "MessageSid" in refused.json()["detail"], refused.text


def test_a_lifted_advisorys_page_says_so_and_still_takes_a_cry_for_help(api, db, asked, consul):
    """After a cancel the link says the advisory was lifted, and that a help pressed there
    still reaches the staff: a probe read a lifted advisory's buttons as an oversight, but a
    cry for help is never refused (an SMS "2" with no check-in open is kept for staff too)."""
    who = asked()
    lifted = "이 경보는 해제되었습니다.</strong> 그래도 도움이 필요하면 2를 누르세요."
    assert lifted not in api.get(f"/c/{who.token}").text
    cancelled = api.post(f"/v1/advisories/{who.advisory}/cancel", headers=consul)
    assert cancelled.status_code == 200, cancelled.text
    page = api.get(f"/c/{who.token}")
    assert page.status_code == 200 and lifted in page.text
    helped = api.post(f"/c/{who.token}", data={"answer": "help", "note": "still trapped"})
    assert helped.status_code == 200 and lifted in helped.text
    assert db.scalar(select(Checkin.answer)) == "help"


def test_an_erased_citizen_cannot_answer_by_link_or_sms(api, db, asked, reply):
    who = asked()
    assert api.get(f"/c/{who.token}").status_code == 200
    erased = api.delete(f"/v1/citizens/{who.public_id}", headers=who.manage)
    assert erased.status_code == 204, erased.text
    assert api.get(f"/c/{who.token}").status_code == 404
    assert api.post(f"/c/{who.token}", data={"answer": "help"}).status_code == 404
    assert twiml_messages(reply(who.phone, "2 help")) == [unmatched_text()]
    assert reply(who.phone, "STOP").status_code == 200
    assert stored(db) == 0
    assert db.scalar(select(func.count()).select_from(Checkin)) == 0


# ---- the /c/{token} page --------------------------------------------------------------------


def test_malformed_tokens_are_404_and_store_nothing(api, db, asked):
    who = asked()
    citizen_id, advisory_id = ids_of(db, who)
    genuine = token_bytes(who.token)
    resigned_other_key = CheckinTokens(b"another secret" * 3).issue(
        citizen_id, advisory_id, utcnow() + timedelta(days=1)
    )
    wrong = {
        "10,000 characters": "A" * 10_000,
        "the token twice": who.token * 2,
        "padded": who.token + "=" * (-len(who.token) % 4 or 2),
        "standard alphabet": who.token.replace("-", "+").replace("_", "/") + "+/",
        "not base64": "!!!!not-base64!!!!",
        "Hangul": "안전합니다",
        "a NUL": "%00" + who.token,
        "dots": "a.b.c",
        "version 0": b64(b"\x00" + genuine[1:]),
        "version 2, signed with our key": signed_token(
            api, citizen_id=citizen_id, advisory_id=advisory_id, version=b"\x02"
        ),
        "signed with another key": resigned_other_key,
        "another advisory, tag kept": b64(
            genuine[:1] + leb128(citizen_id) + leb128(advisory_id + 1) + genuine[-16:]
        ),
        "another citizen, tag kept": b64(
            genuine[:1] + leb128(citizen_id + 1) + leb128(advisory_id) + genuine[-16:]
        ),
    }
    for what, token in wrong.items():
        assert token != who.token, what
        read = api.get(f"/c/{token}")
        assert read.status_code == 404, f"{what}: {read.status_code}"
        answered = api.post(f"/c/{token}", data={"answer": "help", "note": "x"})
        assert answered.status_code == 404, f"{what}: {answered.status_code}"
    assert stored(db) == 0


def test_a_genuine_token_for_no_such_advisory_or_citizen_is_404(api, db, asked):
    who = asked()
    citizen_id, advisory_id = ids_of(db, who)
    for what, target in {
        "no such advisory": (citizen_id, advisory_id + 1000),
        "no such citizen": (citizen_id + 1000, advisory_id),
        "the largest ids": (2**63 - 1, 2**63 - 1),
    }.items():
        token = signed_token(api, citizen_id=target[0], advisory_id=target[1])
        assert api.get(f"/c/{token}").status_code == 404, what
        assert api.post(f"/c/{token}", data={"answer": "safe"}).status_code == 404, what
    # The same construction for the real pair is accepted: the 404s above are for the ids.
    genuine = signed_token(api, citizen_id=citizen_id, advisory_id=advisory_id)
    assert api.get(f"/c/{genuine}").status_code == 200
    assert stored(db) == 0


def test_an_expired_link_is_404(api, db, asked):
    who = asked()
    citizen_id, advisory_id = ids_of(db, who)
    past = signed_token(api, citizen_id=citizen_id, advisory_id=advisory_id, days=-1)
    assert api.get(f"/c/{past}").status_code == 404
    assert api.post(f"/c/{past}", data={"answer": "help"}).status_code == 404
    assert stored(db) == 0


def test_a_note_over_the_limit_is_422_naming_note_and_stores_nothing(api, db, asked):
    who = asked()
    for note in ("x" * (NOTE_MAX + 1), "안" * (NOTE_MAX + 1)):
        response = api.post(f"/c/{who.token}", data={"answer": "help", "note": note})
        assert response.status_code == 422, response.status_code
        assert [e["field"] for e in response.json()["errors"]] == ["note"]
    assert stored(db) == 0
    assert db.scalar(select(func.count()).select_from(Checkin)) == 0
    # At the limit it is taken, and kept as written (sealed).
    note = "줄" * NOTE_MAX
    assert api.post(f"/c/{who.token}", data={"answer": "help", "note": note}).status_code == 200
    [given] = db.scalars(select(CheckinAnswer))
    assert api.app.state.registry.vault.open("checkin-note", given.note_sealed) == note


def test_a_note_s_line_breaks_count_as_the_page_counts_them(api, db, asked):
    """Found by a probe: the textarea's maxlength counts a line break as one character, and the
    browser sends it as CRLF; 499 characters in 25 lines came as 523 and the help was refused."""
    who = asked()
    lines = [f"{n:02d} water rising now" for n in range(25)]  # 19 characters each
    typed = "\n".join(lines)
    assert len(typed) < NOTE_MAX < len("\r\n".join(lines))
    sent = api.post(f"/c/{who.token}", data={"answer": "help", "note": "\r\n".join(lines)})
    assert sent.status_code == 200
    [given] = db.scalars(select(CheckinAnswer))
    assert api.app.state.registry.vault.open("checkin-note", given.note_sealed) == typed


def test_a_note_keeps_nothing_that_would_show_staff_other_text(api, db, asked, reply):
    """NUL, controls and bidi overrides ("\u202eevil" displays "live") are left out of a note,
    by the page and by SMS, as names refuse them; line breaks stay."""
    who = asked()
    written = "\x00room\u202e 1204\u2066\r\nwater\trising\x7f"
    assert api.post(f"/c/{who.token}", data={"answer": "help", "note": written}).status_code == 200
    reply(who.phone, "2 \u202eevil\x00")
    vault = api.app.state.registry.vault
    kept = [vault.open("checkin-note", a.note_sealed) for a in db.scalars(select(CheckinAnswer))]
    assert sorted(kept) == ["2 evil", "room 1204\nwater\trising"]
    # Past MAX_ANSWERS new words go after the last page answer's: kept the same way.
    for _ in range(MAX_ANSWERS):
        api.post(f"/c/{who.token}", data={"answer": "help", "note": "filler"})
    renoted = "  \u202eflood\u2028ing\x00  "
    assert api.post(f"/c/{who.token}", data={"answer": "help", "note": renoted}).status_code == 200
    last = db.scalars(select(CheckinAnswer).order_by(CheckinAnswer.id.desc())).first()
    db.refresh(last)
    words = vault.open("checkin-note", last.note_sealed)
    assert words.startswith("filler\n") and words.endswith("\nflooding")


def test_a_note_over_the_body_limit_is_413(api, db, asked):
    who = asked()
    big = "x" * (api.app.state.settings.max_body_bytes + 1)
    response = api.post(f"/c/{who.token}", data={"answer": "help", "note": big})
    assert response.status_code == 413
    assert stored(db) == 0


def test_a_missing_or_unknown_answer_is_422_and_stores_nothing(api, db, asked):
    who = asked()
    for form in (
        {},
        {"note": "only a note"},
        {"answer": ""},
        {"answer": "SAFE"},
        {"answer": "safe "},
        {"answer": "1"},
        {"answer": "no_answer"},
        {"answer": "help\x00"},
    ):
        response = api.post(f"/c/{who.token}", data=form)
        assert response.status_code == 422, f"{form}: {response.status_code}"
        assert [e["field"] for e in response.json()["errors"]] == ["answer"], form
    # A JSON body is not the form: nothing in it is read as an answer.
    response = api.post(f"/c/{who.token}", json={"answer": "help"})
    assert response.status_code == 422
    assert stored(db) == 0


def test_answers_per_link_are_capped(api, db, asked):
    who = asked()
    for n in range(MAX_ANSWERS):
        answer = ("safe", "help")[n % 2]
        response = api.post(f"/c/{who.token}", data={"answer": answer})
        assert response.status_code == 200, f"answer {n + 1}: {response.status_code}"
    for _ in range(3):
        response = api.post(f"/c/{who.token}", data={"answer": "safe"})
        assert response.status_code == 429, response.status_code
        assert int(response.headers["retry-after"]) > 0
    assert stored(db) == MAX_ANSWERS == 20
    # The one in force is the last recorded, not the refused ones.
    assert db.scalar(select(Checkin.answer)) == "help"
    assert api.get(f"/c/{who.token}").status_code == 200  # reading stays open


def test_a_help_is_never_refused_but_a_flood_of_them_stores_nothing_more(api, db, asked, reply):
    """A leaked link pressed "help" 150 times stored 150 sealed notes, and the citizen's own
    SMS words dropped out of the 20 a consul's reveal shows. Past MAX_ANSWERS in an hour, a
    help while help is in force is answered (200, "recorded") and stores nothing; a help after
    a safe is still recorded: nobody is locked out of crying for help."""
    who = asked()
    reply(who.phone, "2 trapped in room 1204, water rising")
    for n in range(MAX_ANSWERS):
        response = api.post(f"/c/{who.token}", data={"answer": "help", "note": f"filler {n}"})
        assert response.status_code == 200
        # No duty address in this set-up: the page does not claim anyone was paged.
        assert "영사 직원이 확인합니다" in response.text and "알렸습니다" not in response.text
    # The citizen's newest words go after the last stored note's (one row, however many
    # presses), and words kept are never replaced: a probe's leaked link overwrote "trapped,
    # 5th floor" with "false alarm, no need to call".
    moved = "now on the roof of the Grand Hotel"
    response = api.post(f"/c/{who.token}", data={"answer": "help", "note": moved})
    assert response.status_code == 200 and "전부 기록되지 않았습니다" not in response.text
    for _ in range(30):
        response = api.post(f"/c/{who.token}", data={"answer": "help", "note": "A" * NOTE_MAX})
        # The note is full (the first of these was cut, the rest kept nothing): the page does
        # not say "recorded" of words it dropped, and says where to send them.
        assert response.status_code == 200 and 'role="status"' in response.text
        assert "전부 기록되지 않았습니다" in response.text and "2와 함께 답장" in response.text
    assert stored(db) == 1 + MAX_ANSWERS
    db.expire_all()
    vault = api.app.state.registry.vault
    kept = {vault.open("checkin-note", a.note_sealed) for a in db.scalars(select(CheckinAnswer))}
    [last] = [words for words in kept if words.startswith(f"filler {MAX_ANSWERS - 1}")]
    assert last.startswith(f"filler {MAX_ANSWERS - 1}\n{moved}\nAAA") and len(last) == NOTE_MAX
    assert api.post(f"/c/{who.token}", data={"answer": "safe"}).status_code == 429
    # Help in force was never cleared. Safe by SMS, then help on the page: stored.
    db.expire_all()
    assert db.scalar(select(Checkin.answer)) == "help"
    reply(who.phone, "1")
    db.expire_all()
    assert db.scalar(select(Checkin.answer)) == "safe"
    assert api.post(f"/c/{who.token}", data={"answer": "help", "note": "now"}).status_code == 200
    assert stored(db) == 3 + MAX_ANSWERS
    db.expire_all()
    assert db.scalar(select(Checkin.answer)) == "help"
    said = api.app.state.registry.vault
    notes = {said.open("checkin-note", a.note_sealed) for a in db.scalars(select(CheckinAnswer))}
    assert "2 trapped in room 1204, water rising" in notes
    assert "A" * NOTE_MAX not in notes


def test_the_page_shows_no_contact_or_name(api, db, asked):
    who = asked(language="en", name="Jisoo Secretname")
    local = "0" + who.phone[3:]
    secrets_ = [
        who.phone,
        who.phone[1:],
        local,
        f"{local[:3]}-{local[3:7]}-{local[7:]}",
        who.phone[-8:],
        who.email,
        who.email.split("@")[0],
        "Secretname",
        who.manage["Authorization"].split()[-1],
    ]
    pages = {
        "read": api.get(f"/c/{who.token}"),
        "answered": api.post(f"/c/{who.token}", data={"answer": "help", "note": "ankle"}),
    }
    for what, page in pages.items():
        assert page.status_code == 200, what
        for secret in secrets_:
            assert secret not in page.text, f"{what} page shows {secret!r}"
        assert "ankle" not in page.text, what  # the note is not echoed back either
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in page.headers["content-security-policy"]


def test_forged_links_make_us_send_nothing_to_the_duty_staff(api, db, asked, smtp):
    api.app.state.settings.duty_email = ["duty@mofa.test"]
    who = asked()
    before = len(smtp.received)
    forged = who.token[:-2] + ("AA" if not who.token.endswith("AA") else "BA")
    assert api.post(f"/c/{forged}", data={"answer": "help"}).status_code == 404
    assert api.post(INBOUND, data=inbound_form(who.phone, "2"), headers=FORM).status_code == 403
    assert [m["To"] for m in smtp.received[before:]] == []
    assert stored(db) == 0


# ---- the roll call ------------------------------------------------------------------------


ROLLCALL = "/v1/advisories/{}/rollcall"


def test_the_roll_call_needs_a_consul_key(api, db, asked, staff_headers):
    who = asked()
    url = ROLLCALL.format(who.advisory)
    queued = db.scalar(select(func.count()).select_from(Alert))
    viewer = staff_headers("viewer")
    for method in ("get", "post"):
        call = getattr(api, method)
        assert call(url).status_code == 401, method
        assert call(url, headers={"Authorization": "Bearer nope"}).status_code == 401, method
        assert call(url, headers=viewer).status_code == 403, method
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Alert)) == queued  # no round was started


def test_the_roll_call_of_no_such_advisory_is_404(api, consul):
    for advisory in ("no-such-advisory", "ADV-999999", "%00", "x" * 5000):
        url = ROLLCALL.format(advisory)
        assert api.get(url, headers=consul).status_code == 404, advisory
        assert api.post(url, headers=consul).status_code == 404, advisory


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("country=xx", "country"),
        ("country=JPN", "country"),
        ("country=J1", "country"),
        ("answer=bogus", "answer"),
        ("answer=SAFE", "answer"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("offset=-1", "offset"),
        ("offset=99999999999999999999", "offset"),
    ],
)
def test_bad_roll_call_parameters_are_422(api, consul, asked, query, field):
    who = asked()
    response = api.get(f"{ROLLCALL.format(who.advisory)}?{query}", headers=consul)
    assert response.status_code == 422, response.text
    assert any(field in e["field"] for e in response.json()["errors"]), response.text


def test_the_roll_call_masks_contacts(api, db, asked, reply, consul):
    who = asked(name="Minjun Secretname")
    other = asked(name="Seoyeon Hiddenname")  # its advisory asked both of them
    reply(who.phone, "2 trapped in room 1204, call +821055554444")
    response = api.get(f"{ROLLCALL.format(other.advisory)}?limit=500", headers=consul)
    assert response.status_code == 200, response.text
    text = response.text
    for secret in (
        who.phone,
        who.phone[3:],
        who.phone[-8:],
        who.email,
        who.email.split("@")[0],
        "Secretname",
        "room 1204",
        "+821055554444",
        other.phone,
        other.email,
        "Hiddenname",
    ):
        assert secret not in text, f"roll call shows {secret!r}"
    [item] = [i for i in response.json()["items"] if i["citizen_id"] == who.public_id]
    assert item["answer"] == "help" and item["channel"] == "sms"
    assert re.fullmatch(r"\+82\*+\d{4}", item["contact"]), item["contact"]
    assert item["contact"].endswith(who.phone[-4:])
    for row in response.json()["items"]:
        contact = row["contact"] or ""
        assert "*" in contact and not re.search(r"\d{5}", contact), row
    assert json.dumps(response.json()["counts"])  # counts stay plain numbers

    # Their words come with the reveal, which takes a reason and is audited; newest first,
    # each answer on record (this SMS answered both advisories that asked).
    revealed = api.post(
        f"/v1/citizens/{who.public_id}/reveal",
        json={"reason": "Needs help in the Tokyo roll call; calling them now."},
        headers=consul,
    )
    assert revealed.status_code == 200, revealed.text
    [said] = revealed.json()["said"]  # one SMS, shown once
    assert sorted(said["advisories"]) == sorted([who.advisory, other.advisory])
    assert said["words"] == "2 trapped in room 1204, call +821055554444"
    assert (said["answer"], said["channel"]) == ("help", "sms")
    quiet = api.post(
        f"/v1/citizens/{other.public_id}/reveal",
        json={"reason": "No answer in the Tokyo roll call; calling them."},
        headers=consul,
    )
    assert quiet.json()["said"] == []


def test_a_page_form_is_small_and_of_few_fields_whatever_the_token(api, db, asked):
    """A 1 MiB form of half a million empty fields, posted to any /c/ link, held the event
    loop 0.26 s each (nothing else was served meanwhile). A page's form is now at most
    PAGE_FORM_BYTES and FORM_FIELDS_MAX fields, refused before any token is read."""
    who = asked()
    for token in (who.token, "AAAA"):
        many = "&".join(["answer=help"] + ["a"] * FORM_FIELDS_MAX)
        response = api.post(f"/c/{token}", content=many, headers=FORM)
        assert response.status_code == 422, response.status_code
        assert [e["field"] for e in response.json()["errors"]] == ["body"]
        big = "answer=help&note=" + "x" * PAGE_FORM_BYTES
        response = api.post(f"/c/{token}", content=big, headers=FORM)
        assert response.status_code == 413, response.status_code
    assert stored(db) == 0
    # A note at its limit in Korean, percent-encoded (9 bytes a character), still fits.
    response = api.post(f"/c/{who.token}", data={"answer": "help", "note": "안" * NOTE_MAX})
    assert response.status_code == 200
    assert stored(db) == 1


def test_a_browser_opening_a_bad_link_gets_a_page_in_both_languages_not_json(api, db, asked):
    """A citizen who opened a cut or old link from a text saw raw JSON. A browser (asking for
    HTML) now gets a short page in Korean and English with the emergency numbers, the same
    status and the pages' headers; API clients still get problem JSON."""
    who = asked()
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    cut = who.token[:-3]
    for response in (
        api.get(f"/c/{cut}", headers=browser),
        api.post(f"/c/{cut}", data={"answer": "help"}, headers=browser),
        api.get("/a/1.badbad", headers=browser),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "이 링크는 올바르지 않거나" in response.text and "not valid" in response.text
        assert "+82-2-3210-0404" in response.text
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
    missing = api.post(f"/c/{who.token}", data={"note": "x"}, headers=browser)
    assert missing.status_code == 422 and "Go back and press a button" in missing.text
    assert api.get(f"/c/{cut}").json()["detail"] == "no such check-in"  # an API client
    assert stored(db) == 0


def test_a_citizen_meets_a_busy_or_broken_service_as_a_page_and_the_log_keeps_no_link(
    database_url, db, monkeypatch
):
    """Found by two probes: in a crisis, when the database was busy, a citizen pressing "I am
    safe" got raw problem JSON without the emergency numbers (a 503 from the database, the
    request deadline or a crash), and the log line of each wrote the link's path, whose token
    lets its reader answer for the citizen for 7 days. A browser now gets the page in both
    languages, and the log names the route."""
    token = "AQEBsecretTOKENthatmustnotleak"
    faults = {
        "slow": lambda *_, **__: clock.sleep(3.5),
        "database": lambda *_, **__: (_ for _ in ()).throw(
            OperationalError("SELECT 1", {}, Exception("database is locked"))
        ),
        "crash": lambda *_, **__: (_ for _ in ()).throw(RuntimeError("a bug")),
    }
    settings = make_settings(
        database_url,
        request_timeout_s=2.5,
        database_pool_timeout_s=0.5,
        database_connect_timeout_s=2,
        ready_timeout_s=0.5,
    )
    keep = WarningRecords(logging.INFO)
    logging.getLogger().addHandler(keep)
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    try:
        with bound_client(settings, db) as app:
            for fault, expected in (("slow", 503), ("database", 503), ("crash", 500)):
                monkeypatch.setattr(checkin_router, "checkin_page", faults[fault])
                page = app.post(f"/c/{token}", data={"answer": "safe"}, headers=browser)
                assert page.status_code == expected, (fault, page.text)
                assert page.headers["content-type"].startswith("text/html"), fault
                assert "+82-2-3210-0404" in page.text and "try again later" in page.text
                assert page.headers["cache-control"] == "no-store"
                if expected == 503:
                    assert int(page.headers["retry-after"]) > 0
                api_client = app.get(f"/c/{token}")
                assert api_client.status_code == expected, fault
                assert api_client.headers["content-type"] == "application/problem+json"
            clock.sleep(1.5)  # the slow requests' threads end
    finally:
        logging.getLogger().removeHandler(keep)
    ours = [r for r in keep.records if r.name.startswith(("anjeon", "service"))]
    lines = [(r.getMessage(), vars(r)) for r in ours]
    told = {message for message, _ in lines}
    assert {"request deadline passed", "database unavailable", "unhandled error"} <= told
    for message, fields in lines:
        assert token not in repr(fields), message
    assert any(fields.get("route") == "/c/{token}" for _, fields in lines)


def _reveal(api, public_id: str, consul: dict[str, str]) -> dict:
    revealed = api.post(
        f"/v1/citizens/{public_id}/reveal",
        json={"reason": "Needs help in the Tokyo roll call; calling them now."},
        headers=consul,
    )
    assert revealed.status_code == 200, revealed.text
    return revealed.json()


def test_a_leaked_links_notes_cannot_push_the_phones_words_out_of_the_reveal(
    api, db, asked, reply, consul
):
    """A probe's leaked link wrote 25 notes reading "[MOFA duty desk] false alarm, no action
    needed" between safe and help: the reveal's 20 newest words no longer held the citizen's
    SMS "trapped in room 1204". Words from their phone and from pages are now kept apart, 20
    each."""
    who = asked()
    reply(who.phone, "2 trapped in room 1204, call +66899999999")
    for n in range(MAX_ANSWERS):
        pressed = api.post(
            f"/c/{who.token}",
            data={
                "answer": "safe" if n % 2 else "help",
                "note": f"[MOFA duty desk] false alarm {n}",
            },
        )
        assert pressed.status_code == 200
    revealed = api.post(
        f"/v1/citizens/{who.public_id}/reveal",
        json={"reason": "Needs help in the Tokyo roll call; calling them now."},
        headers=consul,
    )
    assert revealed.status_code == 200, revealed.text
    said = revealed.json()["said"]
    phone = [each["words"] for each in said if each["channel"] == "sms"]
    assert phone == ["2 trapped in room 1204, call +66899999999"]
    assert len([each for each in said if each["channel"] == "web"]) == SAID_SHOWN
    assert said == sorted(said, key=lambda each: each["at"], reverse=True)


def test_words_past_the_links_cap_are_a_help_and_make_the_help_newer(api, db, asked, reply, consul):
    """A review: past a link's 20 answers an hour, a help's words went after the link's last
    answer, a leaked link's "safe": the reveal showed them as a safe, at its time, and a
    consul who had read the row before them could close the case. They go with the link's
    last help (recorded once when it has none) and make the help in force newer."""
    who = asked()
    reply(who.phone, "2 trapped")
    for n in range(MAX_ANSWERS):
        pressed = api.post(f"/c/{who.token}", data={"answer": "safe", "note": f"false alarm {n}"})
        assert pressed.status_code == 200
    rollcall = f"/v1/advisories/{who.advisory}/rollcall"
    [before] = api.get(rollcall, headers=consul).json()["items"]
    for words in ("bleeding badly, 5th floor", "now on the roof"):
        pressed = api.post(f"/c/{who.token}", data={"answer": "help", "note": words})
        assert pressed.status_code == 200
    [after] = api.get(rollcall, headers=consul).json()["items"]
    assert after["answer"] == "help" and after["latest_help_at"] > before["latest_help_at"]
    # The second words were added, not answered: the answer's time, which the duty notice
    # waits on, moved once (the page help recorded), not at each press (a review: a leaked
    # link pressing every 50 s put the notice off for hours).
    assert after["answered_at"] < after["latest_help_at"]
    revealed = _reveal(api, who.public_id, consul)
    [latest] = [s for s in revealed["said"] if "bleeding" in s["words"]]
    assert (latest["answer"], latest["channel"]) == ("help", "web")
    assert latest["words"] == "bleeding badly, 5th floor\nnow on the roof"
    stale = api.post(
        f"/v1/advisories/{who.advisory}/rollcall/{who.public_id}/confirm-safe",
        json={"seen_help_at": before["latest_help_at"]},
        headers=consul,
    )
    assert stale.status_code == 409
    assert stored(db) == 2 + MAX_ANSWERS  # the SMS, the 20 safes and one help


def test_words_added_after_words_no_listed_secret_opens_are_kept(api, db, asked, consul):
    """Words added to a page help whose earlier words no listed data secret opens (a secret
    dropped too soon, a damaged row) were a 500 on the citizen's page. They go in a new page
    help (once: later words add to it), and the earlier ones stay sealed as they were, for the
    secret listed again to open (a review: sealing "[unreadable]" over them lost them)."""
    who = asked()
    for n in range(MAX_ANSWERS):
        pressed = api.post(f"/c/{who.token}", data={"answer": "safe", "note": f"false alarm {n}"})
        assert pressed.status_code == 200
    pressed = api.post(f"/c/{who.token}", data={"answer": "help", "note": "bleeding badly"})
    assert pressed.status_code == 200
    db.execute(
        update(CheckinAnswer)
        .where(CheckinAnswer.channel == "web", CheckinAnswer.answer == "help")
        .values(note_sealed=b"damaged")
    )
    for words in ("now on the roof", "water rising"):
        pressed = api.post(f"/c/{who.token}", data={"answer": "help", "note": words})
        assert pressed.status_code == 200, pressed.text
    said = [s["words"] for s in _reveal(api, who.public_id, consul)["said"]]
    assert said[:2] == ["now on the roof\nwater rising", UNREADABLE]
    kept = db.scalars(select(CheckinAnswer.note_sealed).where(CheckinAnswer.answer == "help"))
    assert b"damaged" in kept.all()
    assert stored(db) == MAX_ANSWERS + 2  # the 20 safes and two helps: no more


def test_a_typed_unreadable_marker_is_words_like_any_other(api, db, asked, consul):
    """A review: the page took a note that reads "[unreadable]" for one no secret opens, and
    a leaked link that wrote it recorded a new answer at every press past its cap."""
    who = asked()
    for n in range(MAX_ANSWERS - 1):
        pressed = api.post(f"/c/{who.token}", data={"answer": "safe", "note": f"false alarm {n}"})
        assert pressed.status_code == 200
    for words in (UNREADABLE, "more", "more"):
        pressed = api.post(f"/c/{who.token}", data={"answer": "help", "note": words})
        assert pressed.status_code == 200, pressed.text
    assert stored(db) == MAX_ANSWERS
    said = [s["words"] for s in _reveal(api, who.public_id, consul)["said"]]
    assert said[0] == f"{UNREADABLE}\nmore\nmore"


def test_words_past_the_cap_never_go_under_an_older_closed_help(api, db, asked, reply, consul):
    """A review: past the cap, words went after the link's last page help, even one an SMS
    "1" had closed since: "bleeding, 5th floor" showed under "fire, room 3", at its old time,
    below the "1". They go with the page help in force, or are recorded as it."""
    who = asked()
    assert (
        api.post(f"/c/{who.token}", data={"answer": "help", "note": "fire, room 3"}).status_code
        == 200
    )
    reply(who.phone, "1")
    reply(who.phone, "2 trapped")
    for n in range(MAX_ANSWERS - 1):
        pressed = api.post(f"/c/{who.token}", data={"answer": "safe", "note": f"false alarm {n}"})
        assert pressed.status_code == 200
    late = api.post(f"/c/{who.token}", data={"answer": "help", "note": "bleeding, 5th floor"})
    assert late.status_code == 200
    said = api.post(
        f"/v1/citizens/{who.public_id}/reveal",
        json={"reason": "Needs help in the Tokyo roll call; calling them now."},
        headers=consul,
    ).json()["said"]
    words = [each["words"] for each in said]
    # Its own entry, the newest, as help: not "fire, room 3\nbleeding, …" at the old time.
    assert words[0] == "bleeding, 5th floor" and said[0]["answer"] == "help"
    assert words.index("bleeding, 5th floor") < words.index("2 trapped")
