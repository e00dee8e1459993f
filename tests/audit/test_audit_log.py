"""The audit log: every staff request is recorded (who, role, address, what, about what),
admins read it, and the database itself refuses to change or delete an entry."""

import logging
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from service.advisories import service as advisories_service
from service.advisories.models import Advisory
from service.app import create_app
from service.audit import service as audit_service
from service.audit.models import AuditEntry
from service.db import READ_ONLY, make_engine
from service.staff import service as staff_service
from service.staff.models import StaffKey
from tests.advisories.builders import advisory_body
from tests.conftest import WarningRecords, make_settings
from tests.dispatch.seed import scratch_database


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


def test_a_request_refused_for_its_role_is_recorded_as_refused_and_an_unknown_key_is_not(
    database_url, tmp_path
):
    """Found by a probe: a viewer key's ten escalation attempts (403) left nothing in the log.
    Through the app's own sessions (a refused request's transaction is rolled back), each
    refusal is now an entry of its own; a request with no valid key (anyone's) is not."""
    with scratch_database(database_url, tmp_path, "refusals") as url:
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            viewer = staff_service.create_key(session, name="viewer-probe", role="viewer")
            consul = staff_service.create_key(session, name="consul-probe", role="consul")
        headers = {"Authorization": f"Bearer {viewer.key}"}
        with TestClient(create_app(make_settings(url))) as client:
            created = client.post("/v1/advisories", json=advisory_body(), headers=headers)
            listed = client.get("/v1/audit", headers=headers)  # a GET: a read-only transaction
            keyed = client.post(
                "/v1/staff/keys", json={"name": "x", "role": "admin"}, headers=headers
            )
            # A body that is not JSON is refused before the route's own check runs.
            broken = client.post(
                "/v1/staff/keys",
                content=b'{"name": "x", "role": "admin"',
                headers={**headers, "Content-Type": "application/json"},
            )
            nobody = client.get("/v1/advisories", headers={"Authorization": "Bearer nope"})
            allowed = client.get(
                "/v1/advisories", headers={"Authorization": f"Bearer {consul.key}"}
            )
        assert [r.status_code for r in (created, listed, keyed, broken, nobody, allowed)] == [
            403,
            403,
            403,
            403,
            401,
            200,
        ]
        with Session(engine) as session:
            log = [
                (e.actor, e.role, e.action, e.reason)
                for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
            ]
        engine.dispose()
    assert log == [
        ("viewer-probe", "viewer", "refused POST /v1/advisories", REFUSED.format("consul")),
        ("viewer-probe", "viewer", "refused GET /v1/audit", REFUSED.format("admin")),
        ("viewer-probe", "viewer", "refused POST /v1/staff/keys", REFUSED.format("admin")),
        ("viewer-probe", "viewer", "refused POST /v1/staff/keys", REFUSED.format("admin")),
        ("consul-probe", "consul", "GET /v1/advisories", None),
    ]


REFUSED = "403: this needs the {} role; the key has viewer"


def test_a_staff_request_refused_inside_its_route_is_recorded_as_refused(
    database_url, tmp_path, monkeypatch
):
    """Found by a probe: a request's entry is written in its own transaction, so a route that
    refused (a self-approval, a stale proposal id, a key name taken) rolled it back with
    everything else, and the log showed nothing of the attempt. Found in review since: a
    consul's body that is not JSON left no entry at all, and a read's or a test send's 404 read
    as a request that went through. Each refusal is now an entry of its own, with its status
    and why ("failed" for a 5xx); what the request would have done is still undone."""
    with scratch_database(database_url, tmp_path, "inroute") as url:
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            made = {
                role: staff_service.create_key(session, name=f"{role}-probe", role=role)
                for role in ("consul", "admin")
            }
            other = staff_service.create_key(session, name="other-consul", role="consul")
        alice = {"Authorization": f"Bearer {made['consul'].key}"}
        bob = {"Authorization": f"Bearer {other.key}"}
        admin = {"Authorization": f"Bearer {made['admin'].key}"}
        broken = {**bob, "Content-Type": "application/json"}
        settings = make_settings(url, approval="required")
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            created = client.post("/v1/advisories", json=advisory_body(level=4), headers=alice)
            assert created.status_code == 201, created.text
            advisory = created.json()
            path = f"/v1/advisories/{advisory['id']}"
            waiting = advisory["pending"]["id"]
            answers = [
                client.post(f"{path}/approve", json={"proposal_id": waiting}, headers=alice),
                client.post(f"{path}/approve", json={"proposal_id": waiting + 1}, headers=bob),
                client.post(
                    "/v1/staff/keys", json={"name": "other-consul", "role": "admin"}, headers=admin
                ),
                client.post(f"{path}/reject", json={"reason": "ab\u0000cd"}, headers=bob),
                client.post(f"{path}/approve", content=b'{"proposal_id": ', headers=broken),
                client.post("/v1/advisories/preview", json=[], headers=bob),
                client.get("/v1/advisories/nope", headers=bob),
                client.post(
                    "/v1/advisories/nope/test-send",
                    json={"phone": "+82 10-2000-0001", "language": "ko"},
                    headers=bob,
                ),
            ]
            status = client.get(path, headers=bob).json()["status"]
            searched = client.get("/v1/audit", params={"actor": "a\x00"}, headers=admin)
            monkeypatch.setattr(audit_service, "read", _broken_read)
            crashed = client.get("/v1/audit", headers=admin)
        # A NUL failed in PostgreSQL (500): it is bad input, named.
        assert [e["field"] for e in searched.json()["errors"]] == ["actor"]
        assert [a.status_code for a in answers] + [searched.status_code, crashed.status_code] == [
            403,
            409,
            409,
            422,
            422,
            422,
            404,
            404,
            422,
            500,
        ]
        assert status == "pending_approval"
        with Session(engine) as session:
            refused = [
                (e.actor, e.action, e.reason, e.status)
                for e in session.scalars(
                    select(AuditEntry).where(AuditEntry.status.is_not(None)).order_by(AuditEntry.id)
                )
            ]
            keys = session.scalar(select(func.count()).select_from(StaffKey))
        engine.dispose()
    approving, rejecting = f"POST {ROUTE}/approve", f"POST {ROUTE}/reject"
    assert refused == [
        (
            "consul-probe",
            f"refused {approving}",
            "403: the key that proposed this cannot approve it: a second person must",
            403,
        ),
        (
            "other-consul",
            f"refused {approving}",
            "409: what waits has changed since it was read: read it again",
            409,
        ),
        ("admin-probe", "refused POST /v1/staff/keys", f"409: {answers[2].json()['detail']}", 409),
        ("other-consul", f"refused {rejecting}", "422: invalid input: reason", 422),
        ("other-consul", f"refused {approving}", "422: invalid input: body", 422),
        ("other-consul", "refused POST /v1/advisories/preview", "422: invalid input: body", 422),
        ("other-consul", f"refused GET {ROUTE}", f"404: {answers[6].json()['detail']}", 404),
        (
            "other-consul",
            f"refused POST {ROUTE}/test-send",
            f"404: {answers[7].json()['detail']}",
            404,
        ),
        ("admin-probe", "refused GET /v1/audit", "422: invalid input: actor", 422),
        ("admin-probe", "failed GET /v1/audit", "500: RuntimeError", 500),
    ]
    assert keys == 3


ROUTE = "/v1/advisories/{advisory_id}"


def _broken_read(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("a bug")


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
    # Without the reads (an open console polls them every few seconds), what was done stays.
    made = client.post("/v1/staff/keys", json={"name": "desk", "role": "viewer"}, headers=admin)
    assert made.status_code == 201, made.text
    # Previews are reads too (the console asks one of each advisory in force on each view); a
    # preview of an area the key drew is still there as "preview reach" (a probe).
    issued = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    assert client.post(f"/v1/advisories/{issued['id']}/preview", headers=consul).status_code == 200
    drawn = client.post("/v1/advisories/preview", json=advisory_body(), headers=consul)
    assert drawn.status_code == 200, drawn.text
    done = client.get("/v1/audit", params={"reads": "false"}, headers=admin).json()
    actions = [item["action"] for item in done["items"]]
    assert actions and not any(a.startswith(("GET ", "HEAD ")) for a in actions)
    assert "POST /v1/staff/keys" in actions and "preview reach" in actions
    assert not [a for a in actions if a.endswith("/preview")]
    everything = client.get("/v1/audit", headers=admin).json()
    assert everything["total"] > done["total"]
    # Pages below a first page's newest entry stay put while entries are written.
    newest = everything["items"][0]["id"]
    client.get("/v1/advisories", headers=consul)
    held = client.get("/v1/audit", params={"up_to": newest}, headers=admin).json()
    assert held["items"][0]["id"] == newest and held["total"] == everything["total"]


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


@pytest.mark.parametrize("late_in", ["the route", "a statement"])
def test_a_request_past_its_deadline_is_recorded_as_failed_apart(
    database_url, tmp_path, monkeypatch, late_in
):
    """Found by a probe: 133 reach previews that each ran out of time (the client had its
    503) left no entry: the request's went with its rollback, and its failure was not recorded
    (a review had found that write waiting for SQLite's lock in the very overload that made the
    request late). Now it is recorded, on a connection of its own, within a bound of its own.
    Late in the route (its commit refused at the deadline), or in a statement (on PostgreSQL,
    its connection cut at the deadline)."""
    if late_in == "a statement" and not database_url.startswith("postgresql"):
        pytest.skip("SQLite's statements are not cut at the deadline; the commit is refused")
    done = threading.Event()
    create = advisories_service.create_advisory

    def slow(session: Session, *args: object, **kwargs: object) -> object:
        created = create(session, *args, **kwargs)
        try:
            if late_in == "a statement":
                session.execute(text("SELECT pg_sleep(4)"))
            else:
                time.sleep(3.0)
        finally:
            done.set()
        return created

    monkeypatch.setattr(advisories_service, "create_advisory", slow)
    with scratch_database(database_url, tmp_path, "late") as url:
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            consul = staff_service.create_key(session, name="late-consul", role="consul")
        settings = make_settings(
            url,
            request_timeout_s=2.5,
            database_pool_timeout_s=1.0,
            database_connect_timeout_s=2,
            ready_timeout_s=1.0,
        )
        warned = WarningRecords()
        logging.getLogger("anjeon.auth").addHandler(warned)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            late = client.post(
                "/v1/advisories",
                json=advisory_body(),
                headers={"Authorization": f"Bearer {consul.key}"},
            )
            assert done.wait(10)
            time.sleep(1.0)  # the route's end at its deadline, and what follows
        logging.getLogger("anjeon.auth").removeHandler(warned)
        with Session(engine) as session:
            entries = list(
                session.execute(select(AuditEntry.action, AuditEntry.actor, AuditEntry.status))
            )
            advisories = session.scalar(select(func.count()).select_from(Advisory))
        engine.dispose()
    assert late.status_code == 503
    # Nothing of what the request did (its entries went with its transaction): that it failed.
    assert entries == [("failed POST /v1/advisories", "late-consul", 503)]
    assert advisories == 0
    assert warned.messages == []


def test_an_advisory_id_finds_every_entry_about_it(client, db, staff_headers):
    """A review looked an advisory up by its id and found its issue, not its cancel: the
    routes' entries say "advisory_id=…", the issue's the id alone."""
    consul, admin = staff_headers("consul"), staff_headers("admin")
    created = client.post("/v1/advisories", json=advisory_body(level=1), headers=consul).json()
    other = client.post("/v1/advisories", json=advisory_body(level=1), headers=consul).json()
    cancelled = client.post(f"/v1/advisories/{created['id']}/cancel", headers=consul)
    assert cancelled.status_code == 200, cancelled.text
    page = client.get("/v1/audit", params={"subject": created["id"]}, headers=admin).json()
    actions = {item["action"] for item in page["items"]}
    assert "issue advisory" in actions
    assert "POST /v1/advisories/{advisory_id}/cancel" in actions
    assert all(other["id"] not in (item["subject"] or "") for item in page["items"])
    # Part of an id finds nothing; nor do LIKE's wildcards.
    for partial in (created["id"][:8], "%", "_"):
        found = client.get("/v1/audit", params={"subject": partial}, headers=admin).json()
        assert found["total"] == 0, partial


def test_a_late_request_is_recorded_while_the_apps_pool_is_all_taken(database_url, tmp_path):
    """Found by a review: the record of a request that ran out of time asked the app's pool,
    which the overload that made it late may hold all of, and waited its whole pool timeout
    (5 s) in the request's thread. It has a pool of its own."""
    from starlette.requests import Request

    from service import auth

    with scratch_database(database_url, tmp_path, "late_pool") as url:
        app = create_app(make_settings(url, database_pool_size=1, database_max_overflow=0))
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/advisories",
            "headers": [],
            "query_string": b"",
            "client": ("127.0.0.1", 5000),
            "app": app,
            "path_params": {},
        }
        # The app's one connection, reading (on SQLite a write would hold the one write lock).
        with app.state.engine.connect().execution_options(**{READ_ONLY: True}) as taken:
            taken.execute(text("SELECT 1"))
            auth._record_late(Request(scope), auth._Actor(name="late-consul", role="consul"), None)
        with Session(app.state.engine) as session:
            entries = list(session.execute(select(AuditEntry.actor, AuditEntry.status)))
        app.state.engine.dispose()
        app.state.late_engine.dispose()
    assert entries == [("late-consul", 503)]
