"""Personal data where nobody expects it: provider texts quote the citizen's number; what the
ledger keeps of them is scrubbed, and erasure takes even that."""

import pytest
from sqlalchemy import select

from service.ledger.models import Alert
from service.privacy import scrub_contacts
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.dispatch.fake_twilio import Answer


def test_a_failed_send_keeps_the_reason_but_not_the_number(api, consul, db, dispatcher, twilio):
    citizen_id, manage, _ = register(
        api, location={"lat": 35.5, "lon": 139.5}, phone="010-6123-4567", channels=["sms"]
    )
    twilio.script("+821061234567", Answer(400, code=21211))
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    dispatcher.drain()
    db.expire_all()
    [row] = db.scalars(select(Alert).where(Alert.channel == "sms"))
    assert row.status == "failed" and row.error_code == "21211"
    assert "scripted 400" in row.last_error and "[contact]" in row.last_error
    assert "61234567" not in row.last_error and "1061234567" not in row.last_error
    listed = api.get("/v1/alerts?status=failed", headers=consul).json()["items"]
    assert "61234567" not in str(listed)
    assert api.delete(f"/v1/citizens/{citizen_id}", headers=manage).status_code == 204
    db.expire_all()
    assert db.get(Alert, row.id).last_error is None


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("The 'To' number +821012345678 is not a valid phone number.", "is not a valid"),
        ("550 5.1.1 <jiho.park@example.com>: Recipient address rejected", "550 5.1.1"),
        ("Twilio reports undelivered (error 30003)", "30003"),
        ("+82 10-1234-5678 failed", "failed"),
        ("HTTP 503 after 12.5 s", "12.5"),
        ("550 <jisu.idn@예시.한국> unknown", "unknown"),  # a domain in Korean letters
        ("550 <jisu.idn@xn--vv4b11d.xn--3e0b707e> unknown", "unknown"),  # the same, in IDNA
        # Found by a review, in reveal reasons: other dashes, slashes, a full-width @, no dot.
        ("call 010\u20131234\u20135678 now", "now"),
        ("call 010\u20101234\u20105678 now", "now"),
        ("call 010/1234/5678 now", "now"),
        ("write to kim\uff20example.com now", "now"),
        ("write to kim@localhost now", "now"),
        # A probe's, in reveal reasons: what draws nothing, or underscores, between.
        ("call 010\u200b1234\u200b5678 now", "now"),
        ("call 010_1234_5678 now", "now"),
        # A privacy review's, from a URL: encoded, the number kept its first digits.
        ("GET /Messages.json?To=%2B82%2010%201234%205678 failed", "failed"),
        ("to=rosalind.v%40example.com refused", "refused"),
    ],
)
def test_scrub_takes_contacts_and_keeps_codes(text, kept):
    scrubbed = scrub_contacts(text)
    assert kept in scrubbed
    assert "1012345678" not in scrubbed.replace("-", "").replace(" ", "")
    assert "5678" not in scrubbed and "%40" not in scrubbed
    assert "@" not in scrubbed
