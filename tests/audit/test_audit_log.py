"""The audit log: every staff request is recorded (who, role, address, what, about what),
admins read it, and the database itself refuses to change or delete an entry."""

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from service.audit.models import AuditEntry
from tests.advisories.builders import advisory_body


def entries(db) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_staff_requests_are_recorded_with_who_what_and_about_what(client, db, staff_headers):
    consul = staff_headers("consul")
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul)
    assert created.status_code == 201
    advisory_id = created.json()["id"]
    assert client.get(f"/v1/advisories/{advisory_id}/matches", headers=consul).status_code == 200
    log = entries(db)
    actions = [(e.action, e.subject) for e in log]
    assert ("POST /v1/advisories", None) in actions
    assert ("GET /v1/advisories/{advisory_id}/matches", f"advisory_id={advisory_id}") in actions
    mine = [e for e in log if e.action.startswith(("POST /v1/advisories", "GET /v1/advisories"))]
    assert {e.role for e in mine} == {"consul"}
    assert {e.client for e in mine} == {"testclient"}
    assert all(e.actor.startswith("consul-") for e in mine)


def test_a_request_refused_for_its_role_records_nothing_and_citizens_are_not_staff(
    client, db, staff_headers
):
    before = len(entries(db))
    viewer = staff_headers("viewer")
    assert client.post("/v1/advisories", json=advisory_body(), headers=viewer).status_code == 403
    assert client.get("/v1/advisories", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert len(entries(db)) == before


def test_admins_read_the_log_filtered_and_others_may_not(client, db, staff_headers):
    consul, admin = staff_headers("consul"), staff_headers("admin")
    client.get("/v1/advisories", headers=consul)
    assert client.get("/v1/audit", headers=consul).status_code == 403
    page = client.get("/v1/audit", params={"action": "GET /v1/advisories"}, headers=admin)
    assert page.status_code == 200
    body = page.json()
    assert body["total"] >= 1
    assert all("GET /v1/advisories" in item["action"] for item in body["items"])
    # Reading the log is itself recorded.
    assert entries(db)[-1].action == "GET /v1/audit"


@pytest.mark.parametrize(
    "change",
    [
        lambda: update(AuditEntry).values(reason="rewritten"),
        lambda: delete(AuditEntry),
    ],
    ids=["update", "delete"],
)
def test_the_database_refuses_to_change_or_delete_an_entry(client, db, staff_headers, change):
    client.get("/v1/advisories", headers=staff_headers("viewer"))
    count = db.scalar(select(func.count()).select_from(AuditEntry))
    assert count >= 1
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(change())
    assert db.scalar(select(func.count()).select_from(AuditEntry)) == count
    assert db.scalar(select(func.count()).where(AuditEntry.reason == "rewritten")) == 0


def test_truncate_is_refused_on_postgresql(client, db, staff_headers, backend):
    if backend != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    client.get("/v1/advisories", headers=staff_headers("viewer"))
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(text("TRUNCATE audit_entry"))
