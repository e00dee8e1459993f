"""Every bad registration is a 422 (or 413) problem naming the field, and writes nothing."""

import json

import pytest
from sqlalchemy import func, select

from service.citizens.models import Citizen, CitizenPlace
from tests.builders import citizen_body, stay

BAD_INPUTS = [
    ("phone 12345", {"phone": "12345"}, "phone"),
    ("phone +0", {"phone": "+0"}, "phone"),
    ("phone with letters", {"phone": "010-ABCD-5678"}, "phone"),
    ("landline for sms", {"phone": "02-312-3456"}, "phone"),
    # Sent a code all the same: a probe texted premium-rate numbers and landlines so.
    ("landline not for sms", {"phone": "02-312-3456", "channels": ["email"]}, "phone"),
    ("premium rate not for sms", {"phone": "+449098790000", "channels": ["email"]}, "phone"),
    ("email with CR/LF", {"email": "jisu@example.com\r\nBcc: all@example.com"}, "email"),
    ("email without domain", {"email": "jisu@"}, "email"),
    ("lat 90.0001", {"location": {"lat": 90.0001, "lon": 10}}, "location.lat"),
    ("lon -180.5", {"location": {"lat": 10, "lon": -180.5}}, "location.lon"),
    ("lat as a string", {"location": {"lat": "37.5", "lon": 127}}, "location.lat"),
    ("lat without lon", {"location": {"lat": 37.5}}, "location"),
    ("two location forms", {"location": {"lat": 1, "lon": 2, "country": "KR"}}, "location"),
    ("unknown country", {"location": {"country": "XX"}}, "location.country"),
    ("consent false", {"consent": False}, "consent"),
    ("consent as a string", {"consent": "true"}, "consent"),
    ("sms without phone", {"phone": None, "channels": ["sms"]}, "channels"),
    ("email without address", {"email": None, "channels": ["email"]}, "channels"),
    ("no channels", {"channels": []}, "channels"),
    ("unknown channel", {"channels": ["fax"]}, "channels[0]"),
    ("channel twice", {"channels": ["sms", "sms"]}, "channels"),
    ("language", {"language": "fr"}, "language"),
    ("empty name", {"name": "  "}, "name"),
    ("name with a newline", {"name": "Kim\nEvil"}, "name"),
    ("unknown field verified", {"verified": True}, "verified"),
    ("unknown field id", {"id": "00000000-0000-0000-0000-000000000000"}, "id"),
    ("unknown field status", {"status": "erased"}, "status"),
    ("stay to before from", {"stays": [stay(10, -3)]}, "stays[0].to"),
    ("stay longer than 2 years", {"stays": [stay(1, 800)]}, "stays[0].to"),
    ("stay already ended", {"stays": [stay(-10, 3)]}, "stays[0].to"),
    ("stay at an unknown country", {"stays": [stay(1, 3, country="QQ")]}, "stays[0].country"),
    ("stay with lat out of range", {"stays": [stay(1, 3, lat=-91, lon=0)]}, "stays[0].lat"),
    (
        "stay with an unknown field",
        {"stays": [{**stay(1, 3), "verified": True}]},
        "stays[0].verified",
    ),
    ("21 stays", {"stays": [stay(1, 1)] * 21}, "stays"),
]


def _count(db, model):
    return db.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(
    ("overrides", "field"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_registration_names_the_field_and_writes_nothing(client, db, overrides, field):
    before = (_count(db, Citizen), _count(db, CitizenPlace))
    response = client.post("/v1/citizens", json=citizen_body(**overrides))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    assert field in [e["field"] for e in problem["errors"]], problem
    assert (_count(db, Citizen), _count(db, CitizenPlace)) == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates_are_refused(client, db, literal):
    body = json.dumps(citizen_body()).replace('"lat": 37.5665', f'"lat": {literal}')
    assert literal in body
    before = _count(db, Citizen)
    response = client.post(
        "/v1/citizens", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["location.lat"]
    assert _count(db, Citizen) == before


def test_several_bad_fields_are_reported_together(client):
    response = client.post("/v1/citizens", json=citizen_body(phone="12345", email="x@"))
    assert {e["field"] for e in response.json()["errors"]} == {"phone", "email"}


def test_contacts_and_places_are_refused_in_one_answer(client, db):
    """A citizen told only that their phone number was wrong, then (fixed) that a trip's country
    was, then that another trip had ended, sent the form three times: one answer names all."""
    before = (_count(db, Citizen), _count(db, CitizenPlace))
    body = citizen_body(
        phone="12345",
        email="x@",
        location={"country": "XX"},
        stays=[stay(1, 3), stay(1, 3, country="QQ"), stay(-10, 3)],
    )
    response = client.post("/v1/citizens", json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [
        "phone",
        "email",
        "location.country",
        "stays[1].country",
        "stays[2].to",
    ]
    assert (_count(db, Citizen), _count(db, CitizenPlace)) == before


@pytest.mark.parametrize("where", ["body", "stays[0]"])
def test_a_body_of_many_unknown_fields_is_one_error(client, db, where):
    """Naming each unknown key was 104,000 errors for a 1 MB body: an 11 MB answer, 0.4 s on
    the event loop, for anyone, before any limit. An object with more fields than any of ours
    is one error."""
    before = _count(db, Citizen)
    junk = {f"k{n}": 0 for n in range(5_000)}
    body = {**citizen_body(), **junk} if where == "body" else citizen_body(stays=[junk])
    fields = len(body) if where == "body" else len(junk)
    response = client.post("/v1/citizens", json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": where, "message": f"{fields} fields: an object here has at most 50"}
    ]
    assert _count(db, Citizen) == before


def test_a_422_names_at_most_twenty_errors(client):
    """Each of 60 stays wrong on its own: the answer names the first 20 and counts the rest."""
    bad_stays = [{"lat": 91, "lon": 0, "from": "2030-01-01", "to": "2030-01-02"}] * 60
    response = client.post("/v1/citizens", json=citizen_body(stays=bad_stays))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert len(errors) == 20
    assert errors[0]["field"] == "stays[0].lat"
    assert response.json()["detail"].endswith("; and 40 more")


def test_two_megabyte_body_is_413(client, db):
    before = _count(db, Citizen)
    body = citizen_body(name="x" * (2 * 1024 * 1024))
    response = client.post("/v1/citizens", json=body)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert _count(db, Citizen) == before


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    response = client.post(
        "/v1/citizens", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["status"] == 413
    # The same problem as a body whose Content-Length is over the limit (probe finding).
    declared = client.post("/v1/citizens", content=b" " * (40 * 65536))
    assert response.json() == declared.json()
    assert response.json()["type"] == "urn:anjeon:problem:body-too-large"


def test_invalid_json_is_a_problem(client):
    response = client.post(
        "/v1/citizens", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("(+82) 10 4321 0001", None),
        ("+82 (0)10-4321-0002", None),
        ("010-4321+0003", "one '+' before the country code"),
        ("+82 10 ++4321 0004", "one '+' before the country code"),
    ],
)
def test_a_plus_is_taken_before_the_country_code_bracketed_or_not(client, written, reason):
    """ "(+82) 10 …" was refused as holding something other than digits, spaces, '+', '-', '.'
    and brackets, which is all it holds (probe finding)."""
    response = client.post("/v1/citizens", json=citizen_body(phone=written))
    if reason is None:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 422
        [error] = response.json()["errors"]
        assert error["field"] == "phone" and reason in error["message"]
