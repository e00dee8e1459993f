"""The reply table of test_replies.py end to end: every variant as an inbound SMS signed exactly
as Twilio signs it, through the real app, from a citizen an urgent alert asked "are you safe?".
Each is answered in TwiML in the citizen's language, and stores what its reading says: a safe
or help reply one answer by SMS, an unknown one nothing; STOP and START turn SMS off and on.

One citizen per language and all variants in a loop (a pytest case per variant would build the
app some hundreds of times); a failure names the variant."""

import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import func, select

from service.checkin.models import Checkin, CheckinAnswer
from service.checkin.replies import answer_text
from service.citizens.models import Citizen
from service.db import utcnow
from tests.checkin.test_replies import HELP, SAFE, START, STOP, UNKNOWN

TABLE = [
    *[(body, "safe") for body in SAFE],
    *[(body, "help") for body in HELP],
    *[(body, "unknown") for body in UNKNOWN],
    *[(body, "stop") for body in STOP],
    *[(body, "start") for body in START],
]
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def test_the_table_driven_through_the_webhook_is_the_whole_table():
    assert len(TABLE) >= 40
    assert len(TABLE) == len(SAFE) + len(HELP) + len(UNKNOWN) + len(STOP) + len(START)
    assert {kind for _, kind in TABLE} == {"safe", "help", "unknown", "stop", "start"}


def _twiml(response, variant: str) -> list[ET.Element]:
    """The <Message> elements of a well-formed TwiML answer."""
    assert response.status_code == 200, f"{variant}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/xml"), variant
    assert response.text.startswith(XML_DECLARATION), f"{variant}: {response.text}"
    root = ET.fromstring(response.content)
    assert root.tag == "Response" and not root.attrib, f"{variant}: {response.text}"
    assert all(child.tag == "Message" for child in root), f"{variant}: {response.text}"
    return list(root)


@pytest.mark.usefixtures("app_sessions_in_test")  # the duty notice of a help, after the response
@pytest.mark.parametrize("language", ["ko", "en"])
def test_every_reply_variant_through_the_signed_webhook(api, db, asked, reply, language):
    who = asked(language=language)
    row = db.scalar(select(Citizen).where(Citizen.public_id == who.public_id))
    vault = api.app.state.registry.vault

    def answers_after(last_id: int) -> list[CheckinAnswer]:
        return list(
            db.scalars(
                select(CheckinAnswer)
                .where(CheckinAnswer.citizen_id == row.id, CheckinAnswer.id > last_id)
                .order_by(CheckinAnswer.id)
            )
        )

    def last_answer_id() -> int:
        found = db.scalar(
            select(func.max(CheckinAnswer.id)).where(CheckinAnswer.citizen_id == row.id)
        )
        return found or 0

    heard = dict.fromkeys(("safe", "help", "unknown", "stop", "start"), 0)
    for body, kind in TABLE:
        variant = f"{kind} variant {body!r} ({language})"
        if kind == "stop":
            row.sms_opted_out_at = None
        elif kind == "start":
            row.sms_opted_out_at = utcnow()
        db.flush()
        before = last_answer_id()

        response = reply(who.phone, body)

        messages = _twiml(response, variant)
        new = answers_after(before)
        db.expire(row)
        if kind in ("stop", "start"):
            # The provider confirms opt-out and opt-in itself: we answer nothing.
            assert messages == [], f"{variant}: {response.text}"
            assert response.text == XML_DECLARATION + "<Response></Response>", variant
            assert new == [], f"{variant}: stored {[a.answer for a in new]}"
            opted_out = row.sms_opted_out_at is not None
            assert opted_out == (kind == "stop"), f"{variant}: sms_opted_out_at wrong"
        else:
            assert len(messages) == 1, f"{variant}: {response.text}"
            [message] = messages
            assert not message.attrib and list(message) == [], f"{variant}: {response.text}"
            paged = api.app.state.settings.pages_duty_staff
            expected = answer_text(kind, language, duty_paged=paged)
            assert message.text == expected, f"{variant}: {message.text}"
            assert row.sms_opted_out_at is None, f"{variant}: changed the SMS opt-out"
            if kind == "unknown":
                assert new == [], f"{variant}: stored {[a.answer for a in new]}"
            else:
                assert [(a.answer, a.channel) for a in new] == [(kind, "sms")], (
                    f"{variant}: stored {[(a.answer, a.channel) for a in new]}"
                )
                [given] = new
                # The citizen's own words are kept, sealed.
                assert given.note_sealed is not None, variant
                assert vault.open("checkin-note", given.note_sealed) == body.strip(), variant
                current = db.scalar(select(Checkin).where(Checkin.citizen_id == row.id))
                db.refresh(current)
                assert (current.answer, current.answer_id) == (kind, given.id), variant
        heard[kind] += 1

    assert heard == {
        "safe": len(SAFE),
        "help": len(HELP),
        "unknown": len(UNKNOWN),
        "stop": len(STOP),
        "start": len(START),
    }
    assert len(answers_after(0)) == len(SAFE) + len(HELP)
