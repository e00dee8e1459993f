"""Staff keys: 401 without or with a bad key, 403 with too small a role."""

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.requests import Request

from service.auth import Admin, Viewer, staff_role_of
from service.staff import service as staff_service
from service.staff.models import Role, StaffKey
from tests.builders import register

# (method, path, smallest role that may call it)
ENDPOINTS = [
    ("GET", "/v1/staff/me", "viewer"),
    ("GET", "/v1/registry/counts", "viewer"),
    ("GET", "/v1/registry/citizens?country=KR", "consul"),
    ("GET", "/v1/staff/keys", "admin"),
    ("POST", "/v1/staff/keys", "admin"),
]
ROLES = ["viewer", "consul", "admin"]


@pytest.mark.parametrize(("method", "path", "needed"), ENDPOINTS)
def test_role_matrix(client, staff_headers, method, path, needed):
    body = {"name": "new-key", "role": "viewer"} if method == "POST" else None
    for role in ROLES:
        response = client.request(method, path, json=body, headers=staff_headers(role))
        allowed = ROLES.index(role) >= ROLES.index(needed)
        # Staff answers (a list of citizens, of keys) are never kept in a cache, nor refusals.
        assert response.headers["cache-control"] == "no-store", (role, path)
        if allowed:
            assert response.status_code in (200, 201), (role, response.text)
            body = {"name": f"new-key-{role}", "role": "viewer"} if method == "POST" else None
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert needed in response.json()["detail"]
            # The type every 403 has (a newcomer found about:blank here, forbidden elsewhere).
            assert response.json()["type"] == "urn:anjeon:problem:forbidden"


@pytest.mark.parametrize(("method", "path", "_needed"), ENDPOINTS)
def test_missing_and_bad_keys_are_401(client, method, path, _needed):
    for headers in [{}, {"Authorization": "Bearer ajs_wrong"}, {"Authorization": "Basic abc"}]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["status"] == 401
        assert response.json()["type"] == "urn:anjeon:problem:unauthorized"


def test_a_key_sent_without_bearer_is_told_so_and_not_echoed(client, staff_headers):
    """A newcomer pastes the key alone into Authorization: the answer says what is missing,
    and never repeats what was sent (it is a key)."""
    key = staff_headers("viewer")["Authorization"].removeprefix("Bearer ")
    for header in [key, f"Token {key}", "Bearer "]:
        refused = client.get("/v1/staff/me", headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert '"Bearer "' in refused.json()["detail"], refused.text
        assert key not in refused.text
    missing = client.get("/v1/staff/me")
    assert missing.json()["detail"] == "missing bearer token"
    lowercase = client.get("/v1/staff/me", headers={"Authorization": f"bearer  {key}"})
    assert lowercase.status_code == 200


def test_revoked_key_is_401(client, db):
    issued = staff_service.create_key(db, name="leaving", role="admin")
    headers = {"Authorization": f"Bearer {issued.key}"}
    assert client.get("/v1/staff/me", headers=headers).status_code == 200
    staff_service.revoke_key(db, name="leaving")
    assert client.get("/v1/staff/me", headers=headers).status_code == 401


def test_keys_are_stored_hashed(db):
    issued = staff_service.create_key(db, name="hashed", role="viewer")
    stored = db.scalar(select(StaffKey).where(StaffKey.name == "hashed"))
    assert issued.key not in (stored.key_hash, stored.key_prefix)
    assert stored.key_prefix == issued.key[:10]


def test_admin_creates_and_revokes_keys_over_the_api(client, staff_headers):
    admin = staff_headers("admin")
    created = client.post(
        "/v1/staff/keys", json={"name": "duty-officer", "role": "consul"}, headers=admin
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    new_key = {"Authorization": f"Bearer {created.json()['key']}"}
    assert client.get("/v1/staff/me", headers=new_key).json()["role"] == "consul"
    listed = client.get("/v1/staff/keys", headers=admin).json()
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    revoked = client.post(f"/v1/staff/keys/{created.json()['id']}/revoke", headers=admin)
    assert revoked.json()["revoked_at"]
    assert client.get("/v1/staff/me", headers=new_key).status_code == 401
    duplicate = client.post(
        "/v1/staff/keys", json={"name": "duty-officer", "role": "consul"}, headers=admin
    )
    assert duplicate.status_code == 409
    bad_role = client.post("/v1/staff/keys", json={"name": "x", "role": "root"}, headers=admin)
    assert bad_role.status_code == 422 and bad_role.json()["errors"][0]["field"] == "role"


def test_consul_sees_masked_contacts_by_country(client, staff_headers):
    register(
        client,
        phone="010-5555-1234",
        email="masked.person@example.com",
        location={"lat": 35.68, "lon": 139.69},
    )
    page = client.get("/v1/registry/citizens?country=jp", headers=staff_headers("consul")).json()
    assert page["total"] >= 1
    phones = [c["phone"] for c in page["items"]]
    assert "+82******1234" in phones
    assert all("5555" not in (p or "") for p in phones)
    assert "m***@example.com" in [c["email"] for c in page["items"]]
    counts = client.get("/v1/registry/counts", headers=staff_headers("viewer")).json()
    assert counts["JP"] >= 1
    bad = client.get("/v1/registry/citizens?country=XX", headers=staff_headers("consul"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "country"


def test_a_route_with_two_staff_checks_is_as_strict_as_the_stricter():
    """What a body that is not JSON is checked against (auth.staff_role_of)."""
    app = FastAPI()

    @app.post("/both")
    def both(_viewer: Viewer, _admin: Admin) -> None: ...

    @app.post("/open")
    def open_to_anyone() -> None: ...

    routes = {r.path: r for r in app.routes if isinstance(r, APIRoute)}
    assert staff_role_of(Request({"type": "http", "route": routes["/both"]})) == Role.admin
    assert staff_role_of(Request({"type": "http", "route": routes["/open"]})) is None


@pytest.mark.parametrize(
    "name",
    [
        "feed:USGS",
        "System:expiry",
        "  cli:root",
        "FEED:mofa",
        # Found by a review: an invisible character, a Cyrillic s, a full-width colon.
        "\u200bsystem:expiry",
        "\u0455ystem:expiry",
        "feed\uff1aUSGS",
    ],
)
def test_a_key_may_not_take_a_name_the_service_gives_its_own_actors(
    client, staff_headers, db, name
):
    """Found by a review: a key named "feed:USGS" put USGS's name on a consul's alert as its
    source, and "system:expiry" passed in the audit log for the service lapsing a proposal."""
    admin = staff_headers("admin")
    before = client.get("/v1/staff/keys", headers=admin).json()
    refused = client.post("/v1/staff/keys", json={"name": name, "role": "consul"}, headers=admin)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "name" and '"feed:"' in error["message"]
    assert client.get("/v1/staff/keys", headers=admin).json() == before
    with pytest.raises(Exception, match="may not begin with"):
        staff_service.create_key(db, name=name, role="consul")
    assert db.scalar(select(StaffKey.id).where(StaffKey.name == name.strip())) is None


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("aIice", 409),  # a capital I
        ("a1ice", 409),  # a one
        ("\u0251lice", 409),  # IPA alpha
        ("a\u0142ice", 409),  # l with a stroke
        ("al\u00edce", 409),  # an accent
        ("ali\u0441e", 409),  # a Cyrillic es
        ("a\u04cfice", 409),  # a Cyrillic palochka
        ("ali\u1d04e", 409),  # a small capital C
        ("ali\u0301ce", 409),  # a combining accent
        ("alica", 201),  # another name
    ],
)
def test_a_name_drawn_like_another_keys_is_refused(client, staff_headers, name, status):
    """Found by a probe: "aIice" and "ɑlice" were created beside "alice", and read as her where
    proposals and approvals name who acted."""
    admin = staff_headers("admin")
    made = client.post("/v1/staff/keys", json={"name": "alice", "role": "consul"}, headers=admin)
    assert made.status_code == 201, made.text
    answer = client.post("/v1/staff/keys", json={"name": name, "role": "consul"}, headers=admin)
    assert answer.status_code == status, answer.text
    if status == 409:
        assert "alice" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("bob\u200b", 409),  # a zero width space after it
        ("bob\u3164", 409),  # a Hangul filler after it
        ("b\u034fob", 409),  # a combining grapheme joiner inside
        ("bob\u2800", 409),  # a braille blank
        ("b\u043eb", 409),  # a Cyrillic o
        ("BOB", 409),
        ("\uff42\uff4f\uff42", 409),  # full-width letters
        ("\u202ebob", 422),  # right-to-left override
        ("\u3164", 422),  # a Hangul filler alone draws nothing
    ],
    ids=[
        "zero-width",
        "hangul-filler-after",
        "grapheme-joiner",
        "braille-blank",
        "cyrillic-o",
        "upper-case",
        "full-width",
        "rlo",
        "hangul-filler",
    ],
)
def test_a_key_may_not_take_a_name_that_reads_as_another_keys(client, staff_headers, name, status):
    """A review: an admin's second key could show as another consul where proposals and
    approvals name who acted, its name drawn the same ("bob" + ZERO WIDTH SPACE, "bоb")."""
    admin = staff_headers("admin")
    made = client.post("/v1/staff/keys", json={"name": "bob", "role": "consul"}, headers=admin)
    assert made.status_code == 201, made.text
    before = len(client.get("/v1/staff/keys", headers=admin).json())
    refused = client.post("/v1/staff/keys", json={"name": name, "role": "consul"}, headers=admin)
    assert refused.status_code == status, refused.text
    assert len(client.get("/v1/staff/keys", headers=admin).json()) == before
