"""The schema comes only from Alembic: upgrade from empty, models agree (alembic check), and
downgrade/upgrade round-trips, on each backend."""

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from service.db import make_engine
from service.migrate import alembic_config
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


@pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set")
def test_postgresql_migrations_from_empty():
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = make_url(PG_URL).database + "_migrations"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        _round_trip(url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
