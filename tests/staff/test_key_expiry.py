"""Staff keys expire: a key admits nobody after its day (staff_key_life_days at most), its
holder is told why, and an admin reissues it (a new secret; the old one stops at once)."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.audit.models import AuditEntry
from service.db import utcnow
from service.errors import Conflict
from service.staff import service as staff_service
from service.staff.models import StaffKey
from tests.conftest import bound_client, make_settings


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _expire(db, name: str) -> None:
    """Time passes: the key's day is behind it."""
    db.execute(
        update(StaffKey)
        .where(StaffKey.name == name)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )


def test_a_key_admits_nobody_after_its_day_and_says_so(client, db):
    issued = staff_service.create_key(db, name="old-script", role="admin", days=30)
    headers = _bearer(issued.key)
    me = client.get("/v1/staff/me", headers=headers)
    assert me.status_code == 200
    left = staff_service.refusal(issued.record, now=utcnow() + timedelta(days=29, hours=23))
    assert left is None
    assert me.json()["expires_at"] == issued.record.expires_at.isoformat().replace("+00:00", "Z")
    assert me.json()["expires_soon"] is False
    soon = staff_service.create_key(db, name="drill", role="viewer", days=14)
    assert client.get("/v1/staff/me", headers=_bearer(soon.key)).json()["expires_soon"] is True
    _expire(db, "old-script")
    for method, path in [("GET", "/v1/staff/me"), ("POST", "/v1/staff/keys")]:
        refused = client.request(
            method, path, json={"name": "mine", "role": "admin"}, headers=headers
        )
        assert refused.status_code == 401, refused.text
        assert "expired on" in refused.json()["detail"]
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert db.scalar(select(func.count()).where(StaffKey.name == "mine")) == 0
    # A revoked key is not told it expired: only that it is unknown or revoked.
    staff_service.revoke_key(db, name="old-script")
    revoked = client.get("/v1/staff/me", headers=headers)
    assert revoked.status_code == 401 and revoked.headers["www-authenticate"] == "Bearer"


def test_an_admin_reissues_a_key_and_the_old_secret_stops_at_once(client, db, staff_headers):
    admin = staff_headers("admin")
    old = staff_service.create_key(db, name="seoul-desk", role="consul", email="desk@example.org")
    _expire(db, "seoul-desk")
    path = f"/v1/staff/keys/{old.record.id}/reissue"
    reissued = client.post(
        path, json={"key_prefix": old.key[:10], "expires_in_days": 7}, headers=admin
    )
    assert reissued.status_code == 200, reissued.text
    body = reissued.json()
    assert (body["id"], body["name"], body["role"], body["contact_email"]) == (
        old.record.id,
        "seoul-desk",
        "consul",
        "desk@example.org",
    )
    assert body["key"] != old.key and body["key_prefix"] == body["key"][:10]
    assert reissued.headers["cache-control"] == "no-store"
    me = client.get("/v1/staff/me", headers=_bearer(body["key"]))
    assert me.status_code == 200 and me.json()["name"] == "seoul-desk"
    db.expire_all()
    record = db.get(StaffKey, old.record.id)
    assert (
        timedelta(days=7) - timedelta(minutes=1) < record.expires_at - utcnow() <= timedelta(days=7)
    )
    assert client.get("/v1/staff/me", headers=_bearer(old.key)).status_code == 401
    # Without a term: the one it was last issued for (a week), not the service's most.
    again = client.post(path, json={"key_prefix": body["key_prefix"]}, headers=admin)
    assert again.status_code == 200, again.text
    assert client.get("/v1/staff/me", headers=_bearer(body["key"])).status_code == 401
    db.expire_all()
    record = db.get(StaffKey, old.record.id)
    assert record.term_days == 7 and record.expires_at - utcnow() < timedelta(days=7)
    audited = db.scalars(
        select(AuditEntry.reason).where(
            AuditEntry.action == "reissue staff key", AuditEntry.subject == "seoul-desk"
        )
    ).all()
    assert len(audited) == 2 and all(reason.startswith("until ") for reason in audited)


def test_a_reissue_names_the_secret_it_replaces_so_a_second_one_is_refused(
    client, db, staff_headers
):
    """Found by a review: ten reissues at once each answered 200 with a secret, and only the
    last secret worked. The one that names a secret already replaced is a 409 now."""
    alice, bob = staff_headers("admin"), staff_headers("admin")
    target = staff_service.create_key(db, name="busan-desk", role="consul")
    path = f"/v1/staff/keys/{target.record.id}/reissue"
    first = client.post(path, json={"key_prefix": target.key[:10]}, headers=alice)
    assert first.status_code == 200, first.text
    second = client.post(path, json={"key_prefix": target.key[:10]}, headers=bob)
    assert second.status_code == 409, second.text
    assert first.json()["key_prefix"] in second.json()["detail"]
    assert client.get("/v1/staff/me", headers=_bearer(first.json()["key"])).status_code == 200
    missing = client.post(path, json={}, headers=alice)
    assert missing.status_code == 422 and "key_prefix" in missing.text


def test_only_an_admin_reissues_and_a_revoked_key_stays_revoked(client, db, staff_headers):
    target = staff_service.create_key(db, name="leaving", role="viewer")
    path = f"/v1/staff/keys/{target.record.id}/reissue"
    replacing = {"key_prefix": target.key[:10]}
    assert client.post(path, json=replacing, headers=staff_headers("consul")).status_code == 403
    # The holder of an expired admin key cannot renew their own.
    own = staff_service.create_key(db, name="lapsed-admin", role="admin")
    _expire(db, "lapsed-admin")
    own_path = f"/v1/staff/keys/{own.record.id}/reissue"
    refused = client.post(own_path, json={"key_prefix": own.key[:10]}, headers=_bearer(own.key))
    assert refused.status_code == 401
    staff_service.revoke_key(db, name="leaving")
    refused = client.post(path, json=replacing, headers=staff_headers("admin"))
    assert refused.status_code == 409 and "revoked" in refused.json()["detail"]
    assert client.get("/v1/staff/me", headers=_bearer(target.key)).status_code == 401
    missing = client.post(
        "/v1/staff/keys/999999/reissue", json=replacing, headers=staff_headers("admin")
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("days", "why"), [(31, "must be 1 to 30"), (0, "greater than or equal to 1"), ("x", "integer")]
)
def test_a_key_for_longer_than_the_operator_allows_is_refused(database_url, db, days, why):
    settings = make_settings(database_url, staff_key_life_days=30)
    admin = staff_service.create_key(db, name="admin-30", role="admin", most_days=30)
    before = db.scalar(select(func.count()).select_from(StaffKey))
    with bound_client(settings, db) as client:
        created = client.post(
            "/v1/staff/keys",
            json={"name": "long", "role": "viewer", "expires_in_days": days},
            headers=_bearer(admin.key),
        )
        assert created.status_code == 422, created.text
        assert why in created.text and "expires_in_days" in created.text
        reissued = client.post(
            f"/v1/staff/keys/{admin.record.id}/reissue",
            json={"key_prefix": admin.key[:10], "expires_in_days": days},
            headers=_bearer(admin.key),
        )
        assert reissued.status_code == 422 and "expires_in_days" in reissued.text
        assert client.get("/v1/staff/me", headers=_bearer(admin.key)).status_code == 200
        ok = client.post(
            "/v1/staff/keys",
            json={"name": "short", "role": "viewer", "expires_in_days": 30},
            headers=_bearer(admin.key),
        )
        assert ok.status_code == 201, ok.text
    assert db.scalar(select(func.count()).select_from(StaffKey)) == before + 1


def test_two_reissues_at_once_hand_out_one_secret(engine, backend):
    """Both read the same secret before either commits: the second waits for the first's row
    and then replaces nothing (409), instead of a secret that is dead on arrival."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL's race: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    with Session(engine) as setup:
        issued = staff_service.create_key(setup, name="race-desk", role="consul")
        setup.commit()
        key_id, prefix = issued.record.id, issued.key[:10]
    outcome: dict[str, object] = {}
    try:
        with Session(engine) as first, Session(engine) as second:
            second.get(StaffKey, key_id)  # read before the first commits

            def meanwhile() -> None:
                try:
                    outcome["won"] = staff_service.reissue_key(
                        second, key_id=key_id, replacing=prefix
                    )
                except Conflict as refused:
                    outcome["refused"] = refused.detail
                    second.rollback()

            winner = staff_service.reissue_key(first, key_id=key_id, replacing=prefix)
            other = threading.Thread(target=meanwhile)
            other.start()
            other.join(0.5)  # it waits on the row the first has updated
            first.commit()
            other.join(30)
        assert "won" not in outcome, "a second secret was handed out"
        assert "reissued" in str(outcome["refused"])
        with Session(engine) as after:
            stored = after.get(StaffKey, key_id)
            assert stored.key_prefix == winner.key[:10]
            assert staff_service.authenticate(after, key=winner.key) is not None
    finally:
        with Session(engine) as cleanup:
            cleanup.execute(delete(StaffKey).where(StaffKey.id == key_id))
            cleanup.commit()
