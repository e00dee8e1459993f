"""Names: any script people write names in is taken; bidi controls (a name that displays as
another) and names that draw nothing are a 422 naming `name`, on registration and on change.
The OpenAPI pattern says the same as the check, name for name."""

import re

import pytest

from tests.builders import citizen_body, register

ACCEPTED = [
    ("Korean", "김지수"),
    ("Latin with apostrophe", "Seán O'Brien"),
    ("Latin with diacritics", "José Núñez-García"),
    ("Arabic", "محمد عبد الله"),
    ("Persian with ZWNJ inside", "مهدی\u200cزاده"),
    ("Hebrew", "דוד כהן"),
    ("Devanagari with ZWJ inside", "क्\u200dष"),
    ("Chinese", "王小明"),
    ("Japanese", "山田 太郎"),
    ("Greek", "Αλέξανδρος"),
    ("Cyrillic", "Владимир Иванов"),
    ("Thai", "สมชาย ใจดี"),
    ("Vietnamese", "Nguyễn Thị Minh Khai"),
    ("digits and symbols", "X Æ A-12"),
    ("emoji", "민준 🙂"),
    ("no-break space inside", "Kim\u00a0Minjun"),
    ("soft hyphen inside", "Kim\u00adLee"),
]

REFUSED = [
    ("right-to-left override", "Kim\u202eevil"),
    ("left-to-right embedding", "\u202aKim\u202c"),
    ("right-to-left embedding", "\u202bKim"),
    ("left-to-right override", "\u202dKim"),
    ("first strong isolate", "Kim\u2068x\u2069"),
    ("left-to-right isolate", "\u2066Kim"),
    ("right-to-left isolate", "\u2067محمد\u2069"),
    ("left-to-right mark", "Kim\u200e"),
    ("right-to-left mark", "\u200fمحمد"),
    ("Arabic letter mark", "\u061cمحمد"),
    ("zero-width space only", "\u200b"),
    ("zero-width joiners only", "\u200b\u200c\u200d"),
    ("word joiner only", "\u2060"),
    ("BOM only", "\ufeff"),
    ("Hangul filler only", "\u3164"),
    ("Hangul choseong and jungseong fillers", "\u115f\u1160"),
    ("halfwidth Hangul filler", "\uffa0"),
    ("braille blank", "\u2800"),
    ("soft hyphen only", "\u00ad"),
    ("invisible operators", "\u2061\u2062\u2063"),
    ("variation selector only", "\ufe0f"),
    ("spaces around zero-width", "  \u200b  "),
    ("C1 control", "Kim\u0085Lee"),
    ("line separator", "Kim\u2028Lee"),
    ("newline", "Kim\nEvil"),
    ("empty", "   "),
]


def _problem_fields(response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize("name", [n for _, n in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_names_in_any_script_are_taken_on_register_and_change(client, name):
    citizen_id, headers, _ = register(client, name=name)
    assert client.get(f"/v1/citizens/{citizen_id}", headers=headers).json()["name"] == name
    changed = client.patch(f"/v1/citizens/{citizen_id}", json={"name": name}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == name


@pytest.mark.parametrize("name", [n for _, n in REFUSED], ids=[i for i, _ in REFUSED])
def test_registration_refuses_bidi_controls_and_invisible_names(client, name):
    response = client.post("/v1/citizens", json=citizen_body(name=name))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _problem_fields(response) == ["name"]


@pytest.mark.parametrize("name", [n for _, n in REFUSED], ids=[i for i, _ in REFUSED])
def test_a_change_refuses_them_too_and_keeps_the_name(client, name):
    citizen_id, headers, body = register(client)
    response = client.patch(f"/v1/citizens/{citizen_id}", json={"name": name}, headers=headers)
    assert response.status_code == 422, response.text
    assert _problem_fields(response) == ["name"]
    stored = client.get(f"/v1/citizens/{citizen_id}", headers=headers).json()["name"]
    assert stored == body["name"]


def test_bidi_refusal_says_why(client):
    response = client.post("/v1/citizens", json=citizen_body(name="Kim\u202eevil"))
    assert "bidirectional" in response.json()["errors"][0]["message"]
    invisible = client.post("/v1/citizens", json=citizen_body(name="\u200b\u3164"))
    assert "visible" in invisible.json()["errors"][0]["message"]


def test_the_described_pattern_says_the_same(client):
    """A fuzzer builds names from the OpenAPI pattern: each must be one the check takes."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    patterns = {
        schemas[model]["properties"]["name"]["pattern"]
        for model in ("CitizenCreate", "CitizenUpdate")
    }
    [pattern] = patterns
    for _, name in ACCEPTED:
        assert re.fullmatch(pattern, name), name
    for what, name in REFUSED:
        assert not re.fullmatch(pattern, name.strip()), what
