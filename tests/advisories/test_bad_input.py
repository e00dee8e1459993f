"""Bad advisories: a clear 422 naming the field, and nothing stored."""

import json
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from service.advisories.models import Advisory
from service.citizens.models import Citizen
from tests.advisories.builders import advisory_body, in_days


def _polygon(ring):
    return {"geometry": {"type": "Polygon", "coordinates": [ring]}}


_BIG_RING = [[i * 0.00001, (i % 2) * 0.00001] for i in range(100_000)]
_BIG_RING = [[0.0, -1.0], *_BIG_RING, [0.0, -1.0]]

CASES = [
    (
        "unclosed ring",
        {"area": _polygon([[0, 0], [1, 0], [1, 1], [0, 1]])},
        "area.geometry.coordinates[0]",
    ),
    (
        "3-position ring",
        {"area": _polygon([[0, 0], [1, 0], [0, 0]])},
        "area.geometry.coordinates[0]",
    ),
    (
        "bow-tie",
        {"area": _polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]])},
        "area.geometry.coordinates",
    ),
    (
        "lon 181",
        {"area": _polygon([[0, 0], [181, 0], [1, 1], [0, 0]])},
        "area.geometry.coordinates[0][1]",
    ),
    (
        "lat -90.5",
        {"area": _polygon([[0, 0], [1, -90.5], [1, 1], [0, 0]])},
        "area.geometry.coordinates[0][1]",
    ),
    (
        "string coordinate",
        {"area": _polygon([[0, 0], ["1", 0], [1, 1], [0, 0]])},
        "area.geometry.coordinates[0][1]",
    ),
    ("100k-vertex polygon", {"area": _polygon(_BIG_RING)}, "area.geometry.coordinates"),
    (
        "LineString",
        {"area": {"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}},
        "area.geometry.type",
    ),
    (
        "radius 0",
        {"area": {"circles": [{"lat": 1, "lon": 1, "radius_km": 0}]}},
        "area.circles[0].radius_km",
    ),
    (
        "radius -5",
        {"area": {"circles": [{"lat": 1, "lon": 1, "radius_km": -5}]}},
        "area.circles[0].radius_km",
    ),
    (
        "radius 25,000 km",
        {"area": {"circles": [{"lat": 1, "lon": 1, "radius_km": 25000}]}},
        "area.circles[0].radius_km",
    ),
    (
        "circle lat 91",
        {"area": {"circles": [{"lat": 91, "lon": 1, "radius_km": 5}]}},
        "area.circles[0]",
    ),
    ("unknown country XX", {"area": {"countries": ["KR", "XX"]}}, "area.countries[1]"),
    ("unknown subdivision", {"area": {"subdivisions": ["KR-99"]}}, "area.subdivisions[0]"),
    ("empty area", {"area": {}}, "area"),
    ("area name only", {"area": {"name": {"en": "central Tokyo"}}}, "area"),
    ("area name of no language", {"area": {"countries": ["JP"], "name": {}}}, "area.name"),
    (
        "area name of 201 characters",
        {"area": {"countries": ["JP"], "name": {"ko": "가" * 201}}},
        "area.name.ko",
    ),
    (
        "area name in French",
        {"area": {"countries": ["JP"], "name": {"fr": "Tokyo"}}},
        "area.name.fr",
    ),
    (
        "English area name in Hangul",
        {"area": {"countries": ["JP"], "name": {"en": "도쿄"}}},
        "area.name.en",
    ),
    (
        "area name of two lines",
        {"area": {"countries": ["JP"], "name": {"en": "Tokyo\nand Osaka"}}},
        "area.name.en",
    ),
    ("expires before effective", {"effective": in_days(5), "expires": in_days(2)}, "expires"),
    ("expires in the past", {"effective": in_days(-5), "expires": in_days(-1)}, "expires"),
    ("special for 120 days", {"level": "special", "expires": in_days(120)}, "expires"),
    ("special without an end", {"level": "special", "expires": None}, "expires"),
    ("level 5", {"level": 5}, "level"),
    ("no text", {"title": {}}, "title"),
    ("unknown category", {"category": "weather"}, "category"),
    ("naive datetime", {"expires": "2030-01-01T00:00:00"}, "expires"),
    ("unknown field", {"status": "cancelled"}, "status"),
]


@pytest.fixture
def keys_seen_by_the_body_limit(client, db) -> None:
    """The body limit looks a staff key up in a session of its own (before any route): here it
    must see the keys this test made in its transaction."""
    client.app.state.session_factory = sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.mark.usefixtures("keys_seen_by_the_body_limit")
@pytest.mark.parametrize(("overrides", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_advisory_is_422_and_stores_nothing(client, staff_headers, db, overrides, field):
    before = db.scalar(select(func.count()).select_from(Advisory))
    response = client.post(
        "/v1/advisories", json=advisory_body(**overrides), headers=staff_headers("consul")
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert db.scalar(select(func.count()).select_from(Advisory)) == before


def test_bow_tie_message_carries_the_shapely_reason(client, staff_headers):
    body = advisory_body(area=_polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]))
    response = client.post("/v1/advisories", json=body, headers=staff_headers("consul"))
    assert "Self-intersection" in response.json()["errors"][0]["message"]


def test_nan_coordinate_is_refused(client, staff_headers):
    body = json.dumps(advisory_body(area=_polygon([[0, 0], [1, 0], [1, 1], [0, 0]])))
    body = body.replace("[1, 0]", "[NaN, 0]", 1)
    response = client.post(
        "/v1/advisories",
        content=body,
        headers={**staff_headers("consul"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "area.geometry.coordinates[0][1]"


def test_special_for_90_days_is_fine(client, staff_headers):
    body = advisory_body(level="special", expires=in_days(89))
    assert (
        client.post("/v1/advisories", json=body, headers=staff_headers("consul")).status_code == 201
    )


@pytest.mark.parametrize(
    "window",
    [
        {"effective": "0001-01-01T05:00:00Z"},
        {"expires": "9999-12-31T23:00:00Z"},
        {"effective": "0001-01-01T00:00:00Z", "expires": "9999-12-31T23:59:59Z"},
    ],
    ids=["from year 1", "to year 9999", "both"],
)
def test_times_at_the_ends_of_the_calendar_are_previewed_and_stored(client, staff_headers, window):
    """Matching reads a stay's dates from UTC-12 to UTC+14: half a day from year 1 or 9999
    that calendar ends (OverflowError, a 500, before the dates were clamped)."""
    body = advisory_body(**window)
    preview = client.post("/v1/advisories/preview", json=body, headers=staff_headers("consul"))
    assert preview.status_code == 200, preview.text
    created = client.post("/v1/advisories", json=body, headers=staff_headers("consul"))
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("expires", "9999-12-31T23:59:59-12:00"), ("effective", "0001-01-01T00:00:00+14:00")],
)
def test_a_time_that_leaves_the_calendar_in_utc_is_refused_naming_it(
    client, staff_headers, db, field, value
):
    """Written with its offset it is a real date; in UTC, where it is stored and compared, it
    is in year 10000 or year 0 (OverflowError, a 500, before)."""
    consul = staff_headers("consul")
    before = db.scalar(select(func.count()).select_from(Advisory))
    for path in ("/v1/advisories/preview", "/v1/advisories"):
        answer = client.post(path, json=advisory_body(**{field: value}), headers=consul)
        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == [field]
        assert "UTC" in answer.json()["errors"][0]["message"]
    assert db.scalar(select(func.count()).select_from(Advisory)) == before


@pytest.mark.usefixtures("keys_seen_by_the_body_limit")
def test_only_staff_may_send_the_larger_advisory_body(client, staff_headers):
    """Advisory bodies may be 8 MB (polygons, feed documents), but only with a live key that
    may issue them (consul, admin): anyone else was let send 8 MB and have it parsed before
    the 401 (six at once took the server from 324 to 982 MB), and a viewer's before its 403.
    They get the ordinary limit's 413, declared or chunked."""
    ordinary = client.app.state.settings.max_body_bytes
    big = json.dumps({"title": {"ko": "x" * (2 * ordinary)}}).encode()
    json_type = {"content-type": "application/json"}
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, staff_headers("viewer")):
        refused = client.post("/v1/advisories", content=big, headers={**json_type, **headers})
        assert refused.status_code == 413, refused.text
        assert refused.json()["detail"] == f"request body is larger than {ordinary} bytes"

    def chunks():
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    chunked = client.post("/v1/advisories", content=chunks(), headers=json_type)
    assert chunked.status_code == 413
    # A consul's body of the same size is read, and judged on what it says (a 422 here).
    consul = staff_headers("consul")
    for body in (big, chunks()):
        read = client.post("/v1/advisories", content=body, headers={**json_type, **consul})
        assert read.status_code == 422, read.text


def test_a_webhook_body_is_refused_past_what_a_provider_sends(client):
    """Twilio posts forms of a few kilobytes: 100,000 unsigned fields were parsed (0.38 s of
    CPU) before the 403."""
    form = "&".join(f"f{n}=x" for n in range(100_000))
    for path in ("/v1/webhooks/twilio/inbound", "/v1/webhooks/twilio/status"):
        refused = client.post(
            path, content=form, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert refused.status_code == 413, (path, refused.status_code)


@pytest.mark.usefixtures("keys_seen_by_the_body_limit")
def test_a_body_that_is_not_json_is_answered_for_the_key_first(client, staff_headers):
    """FastAPI decodes a JSON body before any dependency runs: without this, a caller with no
    key learned that the route parses JSON (422) before being told it needs a key."""
    broken = {"Content-Type": "application/json"}
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer ajs_wrong"}, 401),
        (staff_headers("viewer"), 403),
        (staff_headers("consul"), 422),
    ]:
        response = client.post(
            "/v1/advisories", content=b'{"title": ', headers={**broken, **headers}
        )
        assert response.status_code == status, (headers, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"field": "body", "message": "body is not valid JSON (at character 10)"}
    ]
    # A route anyone may call still says what is wrong with the body.
    citizen = client.post("/v1/citizens", content=b"{", headers=broken)
    assert citizen.status_code == 422


@pytest.mark.usefixtures("keys_seen_by_the_body_limit")
def test_a_body_that_is_not_utf8_names_the_body_and_is_answered_for_the_key_first(
    client, staff_headers, db
):
    """JSON is UTF-8: other bytes were a 400 that named nothing ("error parsing the body")."""
    latin1 = {"Content-Type": "application/json"}
    body = '{"title": {"en": "Caf\u00e9"}}'.encode("latin-1")
    for headers, status in [({}, 401), (staff_headers("viewer"), 403)]:
        refused = client.post("/v1/advisories", content=body, headers={**latin1, **headers})
        assert refused.status_code == status, refused.text
    consul = client.post(
        "/v1/advisories", content=body, headers={**latin1, **staff_headers("consul")}
    )
    citizen = client.post("/v1/citizens", content=b'{"name": "\xff"}', headers=latin1)
    for response, byte in [(consul, body.index(b"\xe9")), (citizen, 10)]:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"] == [
            {"field": "body", "message": f"body is not valid UTF-8 (at byte {byte})"}
        ]
    assert db.scalar(select(func.count()).select_from(Citizen)) == 0


@pytest.mark.usefixtures("keys_seen_by_the_body_limit")
@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b'{"level": 1' + b"0" * 5_000 + b"}", "a number has too many digits"),
    ],
    ids=["deep", "long number"],
)
def test_a_body_json_cannot_read_names_the_body_and_is_answered_for_the_key_first(
    client, staff_headers, body, why
):
    """The parser gives up on these (RecursionError, ValueError): FastAPI's 400 named nothing
    and came before the key was looked at."""
    json_type = {"Content-Type": "application/json"}
    for headers, status in [({}, 401), (staff_headers("viewer"), 403)]:
        refused = client.post("/v1/advisories", content=body, headers={**json_type, **headers})
        assert refused.status_code == status, refused.text
    consul = client.post(
        "/v1/advisories", content=body, headers={**json_type, **staff_headers("consul")}
    )
    citizen = client.post("/v1/citizens", content=body, headers=json_type)
    for response in (consul, citizen):
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [
            {"field": "body", "message": f"body cannot be read as JSON: {why}"}
        ]


def test_a_body_that_is_not_json_meets_a_database_that_does_not_answer_as_any_body_does(
    client, tmp_path
):
    """The key cannot be looked up: the same 503 (Retry-After) as for a body that parses."""
    dead = sessionmaker(bind=create_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db"))
    client.app.state.session_factory = dead

    @contextmanager
    def dead_session(_request):
        with dead() as session:
            yield session

    client.app.state.request_transaction = dead_session
    key = {"Authorization": "Bearer ajs_unknown", "Content-Type": "application/json"}
    parsed = client.post("/v1/advisories", content=b'{"title": {}}', headers=key)
    broken = client.post("/v1/advisories", content=b"{", headers=key)
    assert parsed.status_code == broken.status_code == 503
    assert broken.headers["retry-after"] == parsed.headers["retry-after"]


def test_a_body_sent_as_a_form_or_text_is_told_to_be_json(client, staff_headers):
    """A newcomer's curl -d sends a form: the answer says to send JSON with its Content-Type,
    not pydantic's "Input should be a valid dictionary…". Nothing is stored."""
    body = b'{"title": {"en": "x"}}'
    for content_type in ["application/x-www-form-urlencoded", "text/plain", None]:
        headers = {
            **staff_headers("consul"),
            **({"Content-Type": content_type} if content_type else {}),
        }
        refused = client.post("/v1/advisories", content=body, headers=headers)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["field"] == "body"
        assert "Content-Type: application/json" in error["message"]
        assert f"Content-Type: {content_type or 'none'})" in error["message"]
    listed = client.post(
        "/v1/advisories",
        content=b"[1]",
        headers={**staff_headers("consul"), "Content-Type": "application/json"},
    )
    assert listed.json()["errors"] == [{"field": "body", "message": "must be a JSON object"}]
    assert client.get("/v1/advisories", headers=staff_headers("viewer")).json()["items"] == []
