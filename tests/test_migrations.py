"""The schema comes only from Alembic: upgrade from empty, models agree (alembic check), and
downgrade/upgrade round-trips, on each backend."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from service.db import make_engine, make_session_factory
from service.migrate import alembic_config
from service.staff.models import StaffKey
from tests.conftest import PG_URL


def _round_trip(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.check(config)  # raises if the models and migrations disagree
    engine = make_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"citizen", "citizen_place", "staff_key", "alembic_version"} <= tables
    command.downgrade(config, "base")
    assert "citizen" not in inspect(engine).get_table_names()
    command.upgrade(config, "head")
    assert "citizen" in inspect(engine).get_table_names()
    engine.dispose()


def test_sqlite_migrations_from_empty(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    _round_trip(url)
    with make_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


@contextmanager
def _empty_postgresql() -> Iterator[str]:
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = make_url(PG_URL).database + "_migrations"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set")
def test_postgresql_migrations_from_empty():
    with _empty_postgresql() as url:
        _round_trip(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    if not PG_URL:
        pytest.skip("ANJEON_TEST_DATABASE_URL not set")
    with _empty_postgresql() as url:
        yield url


def test_records_that_once_verified_are_marked_so_by_0028(empty_url):
    """Kept from the purge of unverified records: a record holding a verified contact, and
    one that holds none now but was alerted or answered (only a verified contact is)."""
    config = alembic_config(empty_url)
    command.upgrade(config, "0027_alert_told_ahead")
    engine = make_engine(empty_url)
    person = (
        "INSERT INTO citizen (id, public_id, status, language, phone_hash, created_at,"
        " updated_at, notify_sms, notify_email, exercises, wants_sms, wants_email)"
        " VALUES (:id, :id, 'active', 'ko', :phone, :at, :at, false, false, false, false, false)"
    )
    at = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for cid, phone in ((1, "h1"), (2, None), (3, None), (4, None)):
            conn.execute(text(person), {"id": cid, "phone": phone, "at": at})
        conn.execute(
            text(
                "INSERT INTO alert (advisory_id, revision, citizen_id, channel, status,"
                " created_at) VALUES (1, 1, 2, 'sms', 'sent', :at)"
            ),
            {"at": at},
        )
        conn.execute(
            text(
                "INSERT INTO checkin (advisory_id, citizen_id, answer, channel, answer_id,"
                " answered_at) VALUES (1, 3, 'safe', 'web', 1, :at)"
            ),
            {"at": at},
        )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        marked = conn.execute(text("SELECT id, verified_at IS NOT NULL FROM citizen ORDER BY id"))
        assert [tuple(row) for row in marked] == [(1, True), (2, True), (3, True), (4, False)]
    engine.dispose()


def test_keys_that_exist_when_0030_runs_are_good_for_90_days_from_then(empty_url):
    """Nobody is locked out the day expiry arrives; nobody keeps a key for ever either."""
    config = alembic_config(empty_url)
    command.upgrade(config, "0029_contact_code_held")
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO staff_key (id, name, role, key_hash, key_prefix, created_at)"
                " VALUES (1, 'old', 'admin', 'h', 'ajs_x', :at)"
            ),
            {"at": datetime(2020, 1, 1, tzinfo=UTC)},
        )
    started = datetime.now(UTC)
    command.upgrade(config, "head")
    with make_session_factory(engine)() as session:
        key = session.scalar(select(StaffKey))
        assert started <= key.issued_at <= datetime.now(UTC) and key.term_days == 90
        assert key.expires_at == key.issued_at + timedelta(days=90)
    engine.dispose()
