"""A request's transaction commits before its response leaves (Depends(scope="function"), FastAPI
0.121.1 and later): when the commit fails the client gets a 5xx problem, never a 201, and nothing
of the request is stored. Through the real request path, on both backends."""

import re

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.advisories.models import Advisory, AdvisoryRevision
from service.app import create_app
from service.audit.models import AuditEntry
from service.citizens.models import Citizen, CitizenPlace
from service.db import after_commit
from service.ledger.models import Alert
from service.staff import service as staff_service
from tests.advisories.builders import advisory_body
from tests.builders import citizen_body, register
from tests.conftest import make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.seed import scratch_database

FAILURES = {
    "bug": (RuntimeError("commit refused by the test"), 500),
    "database": (OperationalError("COMMIT", {}, OSError("disk I/O error")), 503),
}
# What a request writes: the row that makes its commit fail, how to send it, what it stores.
REQUESTS = {
    "advisory": (
        Advisory,
        lambda client, consul: client.post("/v1/advisories", json=advisory_body(), headers=consul),
        (Advisory, AdvisoryRevision, Alert),
    ),
    "registration": (
        Citizen,
        lambda client, consul: client.post("/v1/citizens", json=citizen_body()),
        (Citizen, CitizenPlace),
    ),
}


def counts(app, models) -> tuple[int, ...]:
    with app.state.session_factory() as session:
        return tuple(session.scalar(select(func.count()).select_from(m)) for m in models)


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("request_kind", list(REQUESTS))
def test_a_failed_commit_answers_5xx_and_stores_nothing(
    database_url, tmp_path, failure, request_kind
):
    error, status = FAILURES[failure]
    holding, send, stored = REQUESTS[request_kind]

    def refuse(session):
        if any(isinstance(row, holding) for row in session.identity_map.values()):
            raise error

    with scratch_database(database_url, tmp_path, "commit") as url:
        app = create_app(make_settings(url))
        with app.state.session_factory.begin() as session:
            key = staff_service.create_key(session, name="duty", role="consul").key
        consul = {"Authorization": f"Bearer {key}"}
        with TestClient(app, raise_server_exceptions=False) as client:
            register(client, location={"lat": 35.5, "lon": 139.5})  # one the advisory reaches
            before = counts(app, stored)
            event.listen(app.state.session_factory, "before_commit", refuse)
            failed = send(client, consul)
            assert failed.status_code == status, failed.text
            assert failed.headers["content-type"] == "application/problem+json"
            assert failed.json()["status"] == status and "id" not in failed.json()
            assert counts(app, stored) == before
            # The same request once commits work again: the commit alone made the difference.
            event.remove(app.state.session_factory, "before_commit", refuse)
            assert send(client, consul).status_code == 201
            assert all(n > b for n, b in zip(counts(app, stored), before, strict=True))


def test_a_verification_whose_commit_fails_keeps_its_networks_share(
    database_url, tmp_path, twilio, smtp
):
    """A verified code gives its network's share of unverified codes back, once its commit
    is stored: given back before (a review), a verification whose commit failed freed a share
    for a code nobody had verified."""
    sms_only = {"channels": ["sms"], "email": None}

    def refuse(_session):
        raise OperationalError("COMMIT", {}, OSError("disk I/O error"))

    with scratch_database(database_url, tmp_path, "verify_commit") as url:
        app = create_app(
            make_settings(
                url,
                **notifier_settings(twilio, smtp),
                verification="required",
                rate_limit_client_unverified="1/hour",
            )
        )
        with (
            TestClient(app, client=("2001:db8:77:1::1", 5000)) as one,
            TestClient(app, client=("2001:db8:77:2::1", 5000)) as two,  # the same /48
        ):
            created = one.post("/v1/citizens", json=citizen_body(**sms_only))
            assert created.status_code == 201, created.text
            citizen, token = created.json()["id"], created.json()["manage_token"]
            code = re.search(r"\b(\d{6})\b", twilio.messages[-1]["body"]).group(1)
            assert two.post("/v1/citizens", json=citizen_body(**sms_only)).status_code == 429

            def verify():
                return one.post(
                    f"/v1/citizens/{citizen}/verify",
                    json={"channel": "sms", "code": code},
                    headers={"Authorization": f"Bearer {token}"},
                )

            event.listen(app.state.session_factory, "before_commit", refuse)
            assert verify().status_code == 503
            event.remove(app.state.session_factory, "before_commit", refuse)
            assert two.post("/v1/citizens", json=citizen_body(**sms_only)).status_code == 429
            assert verify().status_code == 200
            assert two.post("/v1/citizens", json=citizen_body(**sms_only)).status_code == 201


def test_a_staff_read_is_audited_while_another_connection_writes(database_url, tmp_path):
    """A GET reads on a read-only transaction, yet writes its audit entry: that write goes in a
    transaction of its own. Made in the read-only one, it fails on SQLite as soon as another
    connection has written since the read began ("database is locked", a 503)."""
    with scratch_database(database_url, tmp_path, "audited_read") as url:
        app = create_app(make_settings(url))
        factory = app.state.session_factory
        with factory.begin() as session:
            key = staff_service.create_key(session, name="reader", role="viewer").key
        wrote_meanwhile = []

        def write_meanwhile(session, _context, _instances):
            # Once, just before the audit entry is written: another connection commits a write.
            if wrote_meanwhile or not any(isinstance(o, AuditEntry) for o in session.new):
                return
            wrote_meanwhile.append(True)
            with factory.begin() as other:
                staff_service.create_key(other, name="meanwhile", role="viewer")

        event.listen(factory, "before_flush", write_meanwhile)
        with TestClient(app, raise_server_exceptions=False) as client:
            listed = client.get("/v1/advisories", headers={"Authorization": f"Bearer {key}"})
        assert wrote_meanwhile == [True]
        assert listed.status_code == 200, listed.text
        assert counts(app, (AuditEntry,)) == (1,)


def test_each_process_keeps_the_pool_its_settings_give(database_url, tmp_path):
    """A pool of 5 made PostgreSQL open a connection every 5 registrations under 16 at a time
    (its CPU per registration doubled): the pool's size and overflow are settings."""
    from service.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url, database_pool_size=7, database_max_overflow=2))
    pool = app.state.session_factory.kw["bind"].pool
    try:
        assert pool.size() == 7 and pool._max_overflow == 2  # no public reader
    finally:
        app.state.session_factory.kw["bind"].dispose()


def test_the_bursts_endpoints_hand_off_to_the_thread_pool_once(client, monkeypatch):
    """Registration and a code's check run with their transaction in one thread of anyio's
    pool (in_transaction): under load each hand-off stalls the event loop. A sync endpoint
    with SessionDep takes one for the session, one for itself and one for the commit."""
    handed: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):
        handed.append(getattr(func, "__qualname__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    citizen_id, headers, _ = register(client)
    assert handed == ["in_transaction.<locals>.run"]
    handed.clear()
    wrong = client.post(
        f"/v1/citizens/{citizen_id}/verify",
        json={"channel": "sms", "code": "000000"},
        headers=headers,
    )
    assert wrong.status_code == 422, wrong.text
    assert handed == ["in_transaction.<locals>.run"]
    handed.clear()
    assert client.get(f"/v1/citizens/{citizen_id}", headers=headers).status_code == 200
    assert len(handed) >= 3, handed  # the counter sees a sync endpoint's hand-offs


def test_after_commit_waits_for_the_sessions_own_transaction(engine):
    """service.db.after_commit: a call runs once the session's transaction commits, never for
    a savepoint (a review: SQLAlchemy fires its commit events for a savepoint released too, so
    a call ran before the commit that could still fail), and not at all after a rollback."""
    seen: list[str] = []
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: seen.append("rolled back"))
        with session.begin_nested():
            session.execute(text("SELECT 2"))
        session.begin_nested().rollback()
        assert seen == []
        session.rollback()
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: seen.append("committed"))
        with session.begin_nested():
            session.execute(text("SELECT 2"))
        assert seen == []
        session.commit()
    assert seen == ["committed"]
