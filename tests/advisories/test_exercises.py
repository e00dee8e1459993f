"""Exercises end to end through the app, the fake Twilio and a real SMTP server: a drill reaches
only citizens who opted in (`exercises: true`), every message of it starts with [훈련] or
[EXERCISE]; a real advisory reaches everyone; CAP status Exercise is a drill, Test is never
sent; the roll call and the alert rows say which advisories were drills."""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from service.advisories.models import Advisory
from service.citizens.models import Citizen
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body
from tests.builders import citizen_body, register
from tests.dispatch import conftest as dispatch_fixtures

# The dispatch fixtures (an app whose notifiers are the fake Twilio and the SMTP sink, a
# dispatcher inside the test's transaction, a consul's key), taken by reference.
api = dispatch_fixtures.api
consul = dispatch_fixtures.consul
dispatch_settings = dispatch_fixtures.dispatch_settings
dispatcher = dispatch_fixtures.dispatcher

TOKYO = {"lat": 35.5, "lon": 139.5}
MARK = {"ko": "[훈련]", "en": "[EXERCISE]"}
CHECKIN_LINK = re.compile(r"https://anjeon\.test/c/[A-Za-z0-9_-]+")
DETAILS_LINK = re.compile(r"https://anjeon\.test(/a/[A-Za-z0-9._-]+)")


@dataclass(frozen=True)
class Person:
    id: str
    headers: dict[str, str]  # the citizen's own Authorization
    phone: str  # as Twilio sees it
    email: str


def e164(korean_mobile: str) -> str:
    return "+82" + korean_mobile.replace("-", "")[1:]


def person(api, *, exercises: bool | None, language: str = "ko", **overrides) -> Person:
    """A citizen (in Tokyo unless told) on SMS and e-mail; exercises None: left out."""
    extra = {} if exercises is None else {"exercises": exercises}
    where = overrides.pop("location", TOKYO)
    cid, headers, body = register(api, location=where, language=language, **extra, **overrides)
    return Person(cid, headers, e164(body["phone"]), body["email"])


def issue(api, consul, **overrides) -> str:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    assert response.json()["exercise"] is overrides.get("exercise", False)
    return response.json()["id"]


def alerted(db, advisory_public_id: str) -> set[str]:
    """Public ids of the citizens with a ledger row for the advisory."""
    db.expire_all()
    rows = db.scalars(
        select(Citizen.public_id)
        .join(Alert, Alert.citizen_id == Citizen.id)
        .join(Advisory, Advisory.id == Alert.advisory_id)
        .where(Advisory.public_id == advisory_public_id)
    )
    return set(rows)


def _plain(mail) -> str:
    return mail.get_body(("plain",)).get_content()


def _html(mail) -> str:
    return mail.get_body(("html",)).get_content()


# -- the citizen's choice ----------------------------------------------------------------------


def test_citizens_opt_in_on_registration_and_by_patch_default_off(api):
    cid, headers, _ = register(api)
    assert api.get(f"/v1/citizens/{cid}", headers=headers).json()["exercises"] is False
    patched = api.patch(f"/v1/citizens/{cid}", json={"exercises": True}, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["exercises"] is True
    # Left out: unchanged.
    renamed = api.patch(f"/v1/citizens/{cid}", json={"language": "en"}, headers=headers)
    assert renamed.json()["exercises"] is True
    other, other_headers, _ = register(api, exercises=True)
    assert api.get(f"/v1/citizens/{other}", headers=other_headers).json()["exercises"] is True


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_a_non_bool_exercises_is_422_naming_the_field(api, db, value):
    response = api.post("/v1/citizens", json=citizen_body(exercises=value))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "exercises" in [e["field"] for e in response.json()["errors"]]
    cid, headers, _ = register(api)
    patched = api.patch(f"/v1/citizens/{cid}", json={"exercises": value}, headers=headers)
    assert patched.status_code == 422, patched.text
    assert "exercises" in [e["field"] for e in patched.json()["errors"]]
    assert api.get(f"/v1/citizens/{cid}", headers=headers).json()["exercises"] is False


# -- whom a drill reaches, and how it reads ------------------------------------------------------


def test_an_exercise_reaches_only_opted_in_citizens_marked(
    api, consul, db, dispatcher, twilio, smtp
):
    korean = person(api, exercises=True, language="ko")
    english = person(api, exercises=True, language="en")
    left_out = person(api, exercises=None)
    drill = issue(api, consul, exercise=True)
    dispatcher.drain()
    assert alerted(db, drill) == {korean.id, english.id}
    assert twilio.bodies_to(left_out.phone) == [] and smtp.to(left_out.email) == []
    for who, lang in ((korean, "ko"), (english, "en")):
        [sms] = twilio.bodies_to(who.phone)
        assert sms.startswith(f"{MARK[lang]} [")
        [message] = smtp.to(who.email)
        assert message["Subject"].startswith(MARK[lang])
        assert _plain(message).startswith(MARK[lang])
        body = _html(message).split("<body>", 1)[1].lstrip()
        assert body.startswith(f"<p><strong>{MARK[lang]}</strong>")
        # The details page says so too.
        page = api.get(DETAILS_LINK.search(_plain(message)).group(1))
        assert page.status_code == 200
        assert f"<title>{MARK[lang]} " in page.text
        assert page.text.split("<body>", 1)[1].lstrip().startswith(f"<p><strong>{MARK[lang]}")

    # A real advisory reaches everyone, opted in or not, and is not marked.
    real = issue(api, consul)
    dispatcher.drain()
    assert alerted(db, real) == {korean.id, english.id, left_out.id}
    [sms] = twilio.bodies_to(left_out.phone)
    [mail] = smtp.to(left_out.email)
    assert not sms.startswith("[훈련]") and "[훈련]" not in mail["Subject"]
    assert not twilio.bodies_to(english.phone)[-1].startswith("[EXERCISE]")

    # The alert views tell the two apart.
    for advisory, expected in ((drill, True), (real, False)):
        rows = api.get(f"/v1/advisories/{advisory}/alerts", headers=consul).json()["items"]
        assert rows and {row["exercise"] for row in rows} == {expected}


def test_a_cut_exercise_sms_keeps_its_mark_ask_and_link(api, consul, db, dispatcher, twilio):
    who = person(api, exercises=True, language="en")
    long_words = {"ko": "즉시 " * 200, "en": "Leave now. " * 60}
    issue(api, consul, exercise=True, level=4, message=long_words)
    dispatcher.drain()
    [sms] = twilio.bodies_to(who.phone)
    link = CHECKIN_LINK.search(sms)
    assert sms.startswith("[EXERCISE] [")
    assert link and sms.endswith(f"Reply 1 = safe / 2 = need help {link.group(0)}"), sms
    assert "..." in sms  # the words were cut, not the mark, the ask or the link


def test_a_running_exercise_reaches_newcomers_and_movers_who_opted_in(
    api, consul, db, dispatcher, twilio
):
    drill = issue(api, consul, exercise=True)
    newcomer = person(api, exercises=True)
    bystander = person(api, exercises=False)
    assert alerted(db, drill) == {newcomer.id}
    # Opting in later is matched at once; so is arriving from elsewhere, opted in.
    opted = api.patch(
        f"/v1/citizens/{bystander.id}", json={"exercises": True}, headers=bystander.headers
    )
    assert opted.status_code == 200, opted.text
    traveller = person(api, exercises=True, location={"lat": 48.85, "lon": 2.35})
    assert alerted(db, drill) == {newcomer.id, bystander.id}
    moved = api.put(f"/v1/citizens/{traveller.id}/location", json=TOKYO, headers=traveller.headers)
    assert moved.status_code == 200, moved.text
    assert alerted(db, drill) == {newcomer.id, bystander.id, traveller.id}
    dispatcher.drain()
    for who in (newcomer, bystander, traveller):
        assert twilio.bodies_to(who.phone)[0].startswith("[훈련] [")


def test_the_check_in_of_an_exercise_is_marked_and_its_roll_call_says_so(
    api, consul, db, dispatcher, twilio, smtp
):
    who = person(api, exercises=True, language="ko")
    drill = issue(api, consul, exercise=True, level=4)
    dispatcher.drain()
    [first] = twilio.bodies_to(who.phone)
    token = CHECKIN_LINK.search(first).group(0).rsplit("/", 1)[1]
    page = api.get(f"/c/{token}")
    assert page.status_code == 200 and "<title>[훈련] " in page.text
    assert page.text.split("<body>", 1)[1].lstrip().startswith("<p><strong>[훈련]")
    # A round on demand: the short ask, by SMS and by e-mail, is marked too.
    started = api.post(f"/v1/advisories/{drill}/rollcall", headers=consul)
    assert started.status_code == 202, started.text
    dispatcher.drain()
    [_, ask] = twilio.bodies_to(who.phone)
    assert ask.startswith("[훈련] [") and CHECKIN_LINK.search(ask)
    [_, asked_by_mail] = smtp.to(who.email)
    assert asked_by_mail["Subject"].startswith("[훈련]")
    assert _plain(asked_by_mail).startswith("[훈련]")
    roll = api.get(f"/v1/advisories/{drill}/rollcall", headers=consul).json()
    assert roll["exercise"] is True and roll["counts"]["no_answer"] == 1
    real = issue(api, consul, level=4)
    dispatcher.drain()
    assert api.get(f"/v1/advisories/{real}/rollcall", headers=consul).json()["exercise"] is False


def _cap(status: str) -> bytes:
    """The README's Tokyo earthquake (a 50 km circle over TOKYO), with this CAP status."""
    xml = (Path(__file__).parents[2] / "examples" / "tokyo-earthquake.cap.xml").read_bytes()
    return xml.replace(b"<status>Actual</status>", f"<status>{status}</status>".encode()).replace(
        b"tokyo-earthquake-1", f"tokyo-earthquake-{status}".encode()
    )


def _import(api, consul, status: str) -> dict:
    response = api.post(
        "/v1/advisories/import",
        content=_cap(status),
        headers={**consul, "content-type": "application/cap+xml"},
    )
    assert response.status_code == 201, response.text
    [advisory] = response.json()["advisories"]
    return advisory


def test_a_cap_exercise_reaches_only_opted_in_citizens_and_a_cap_test_nobody(
    api, consul, db, dispatcher, twilio, smtp
):
    drilled = person(api, exercises=True, language="en")
    bystander = person(api, exercises=False, language="en")
    drill = _import(api, consul, "Exercise")
    assert (drill["exercise"], drill["alerts_citizens"]) == (True, True)
    dispatcher.drain()
    assert alerted(db, drill["id"]) == {drilled.id}
    [sms] = twilio.bodies_to(drilled.phone)
    assert sms.startswith("[EXERCISE] [")
    assert smtp.to(drilled.email)[0]["Subject"].startswith("[EXERCISE]")
    assert twilio.bodies_to(bystander.phone) == [] and smtp.to(bystander.email) == []

    test = _import(api, consul, "Test")
    assert (test["exercise"], test["alerts_citizens"]) == (False, False)
    dispatcher.drain()
    assert alerted(db, test["id"]) == set()
    assert len(twilio.bodies_to(drilled.phone)) == 1 and twilio.bodies_to(bystander.phone) == []
