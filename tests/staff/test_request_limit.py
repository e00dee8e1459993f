"""Requests per staff key (ANJEON_RATE_LIMIT_STAFF), shared by every process through the
limits' storage: a leaked key or a runaway script is held to it, and so is the audit log's
growth, as a request past it is refused 429 before anything is recorded."""

import secrets

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.app import create_app
from service.audit.models import AuditEntry
from service.db import make_engine
from service.metrics import RATE_LIMITED, STAFF_UNCOUNTED
from service.staff import service as staff_service
from tests.conftest import make_settings, redis_url_for_tests
from tests.dispatch.seed import scratch_database


def _entries(session: Session, actor: str) -> int:
    return session.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.actor == actor)
    )


def test_a_key_past_its_limit_is_refused_before_anything_is_recorded(database_url, tmp_path):
    with scratch_database(database_url, tmp_path, "stafflimit") as url:
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            leaked = staff_service.create_key(session, name="leaked", role="consul")
            other = staff_service.create_key(session, name="other", role="viewer")
        headers = {"Authorization": f"Bearer {leaked.key}"}
        broken = {**headers, "Content-Type": "application/json"}
        refused_before = RATE_LIMITED.labels("staff")._value.get()
        settings = make_settings(url, rate_limit_staff="4/minute")
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            admitted = [client.get("/v1/staff/me", headers=headers) for _ in range(4)]
            past = [
                client.get("/v1/staff/me", headers=headers),
                client.get("/v1/advisories/nope", headers=headers),  # a route's own refusal
                client.post("/v1/advisories", content=b'{"title": ', headers=broken),
                client.post("/v1/advisories/preview", json=[], headers=headers),
            ]
            another = client.get("/v1/staff/me", headers={"Authorization": f"Bearer {other.key}"})
        assert [a.status_code for a in admitted] == [200] * 4
        assert [p.status_code for p in past] == [429] * 4, [p.text for p in past]
        for answer in past:
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["detail"].startswith("too many requests with this staff key")
            assert 0 < int(answer.headers["retry-after"]) <= 60
        assert another.status_code == 200  # each key has its own count
        assert RATE_LIMITED.labels("staff")._value.get() - refused_before == 4
        with Session(engine) as session:
            assert _entries(session, "leaked") == 4  # the four admitted, nothing of the rest
            assert _entries(session, "other") == 1
        engine.dispose()


def test_two_processes_hold_a_key_to_one_limit_through_redis(database_url, tmp_path):
    url_of_redis = redis_url_for_tests("the shared staff limit's test")
    with scratch_database(database_url, tmp_path, "stafflimit2") as url:
        engine = make_engine(url)
        name = f"shared-{secrets.token_hex(4)}"  # the storage's keys outlive the test
        with Session(engine) as session, session.begin():
            issued = staff_service.create_key(session, name=name, role="viewer")
        headers = {"Authorization": f"Bearer {issued.key}"}
        settings = make_settings(url, rate_limit_staff="5/minute", rate_limit_storage=url_of_redis)
        with (
            TestClient(create_app(settings), raise_server_exceptions=False) as first,
            TestClient(create_app(settings), raise_server_exceptions=False) as second,
        ):
            answers = [
                (first if turn % 2 else second).get("/v1/staff/me", headers=headers).status_code
                for turn in range(7)
            ]
        assert answers == [200] * 5 + [429] * 2
        with Session(engine) as session:
            assert _entries(session, name) == 5
        engine.dispose()


def test_staff_work_on_when_the_limits_storage_is_down(database_url, tmp_path):
    """Found by a review: with every staff request counted in Redis, a Redis that was down
    made the console answer 503 to everything, cancelling a level 4 included. Staff requests
    now go through uncounted (and counted in a metric) while the storage is away."""
    with scratch_database(database_url, tmp_path, "stafflimit3") as url:
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            issued = staff_service.create_key(session, name="crisis", role="consul")
        headers = {"Authorization": f"Bearer {issued.key}"}
        before = STAFF_UNCOUNTED._value.get()
        settings = make_settings(url, rate_limit_storage="redis://127.0.0.1:1/0")
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            answers = [client.get("/v1/staff/me", headers=headers).status_code for _ in range(3)]
            listed = client.get("/v1/advisories", headers=headers)
        assert answers == [200, 200, 200] and listed.status_code == 200
        assert STAFF_UNCOUNTED._value.get() - before == 4
        with Session(engine) as session:
            assert _entries(session, "crisis") == 4  # each still in the audit log
        engine.dispose()
