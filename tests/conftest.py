"""Fixtures: a migrated database per backend (SQLite always, PostgreSQL when
ANJEON_TEST_DATABASE_URL is set, and it must be in CI), each test inside a rolled-back
transaction, and the real ASGI app bound to that transaction."""

import gc
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.app import create_app
from service.config import Settings
from service.db import make_engine, savepoint_as_transaction
from service.geo.geocoding import Geocoder
from service.migrate import drop_schema, upgrade
from service.staff import service as staff_service
from tests.dispatch.fake_twilio import FakeTwilio
from tests.dispatch.smtp_sink import SmtpSink

PG_URL = os.environ.get("ANJEON_TEST_DATABASE_URL")

# Which leg runs which test, and the seconds each took: scripts/test_legs.py.
pytest_plugins = ["tests.legs"]


def redis_url_for_tests(what: str) -> str:
    """The Redis the tests of limits shared between processes use (ANJEON_TEST_REDIS_URL): in
    CI a test of `what` may not skip for want of it."""
    url = os.environ.get("ANJEON_TEST_REDIS_URL")
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"CI must set ANJEON_TEST_REDIS_URL: {what} may not skip")
    pytest.skip("ANJEON_TEST_REDIS_URL not set (e.g. redis://127.0.0.1:6379/15)")


TEST_SECRET = secrets.token_urlsafe(40)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI") and not PG_URL:
        raise pytest.UsageError(
            "CI must set ANJEON_TEST_DATABASE_URL: the PostgreSQL tests may not skip"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "live_settings(**settings): settings the `live` service of tests/web runs with"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # After the summary, pytest's unraisable-exception plugin runs two full garbage collections
    # over everything a leg made (hundreds of apps that FastAPI's callable caches keep alive):
    # 19-27 s a leg here, for the last test's garbage alone. Frozen objects are not scanned
    # (an unraisable exception in that last garbage goes unreported: every test's own is not).
    gc.freeze()


def pytest_report_header() -> str:
    if PG_URL:
        return "backends: sqlite, postgresql"
    return "backends: sqlite (postgresql skipped: no ANJEON_TEST_DATABASE_URL)"


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set"),
    ),
]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'anjeon.db'}"
    else:
        assert PG_URL
        url = PG_URL
        drop_schema(url)  # what earlier runs left
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def backend(engine: Engine) -> str:
    return engine.dialect.name


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session whose work is rolled back after the test."""
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    transaction.rollback()
    connection.close()


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "scheduler_enabled": False,
        "log_format": "json",
        # Most tests are about what happens after registration: their contacts count as
        # verified and one test client may register many. tests/citizens/test_verification.py
        # and test_limits.py run with verification required and the shipped limits (and
        # tests/advisories/test_approval.py with approval required); the
        # answers to check-in replies are limited in tests/checkin/test_checkin_flow.py.
        "verification": "off",
        "approval": "off",
        "rate_limit_client": "100000/hour",
        "rate_limit_reply": "100000/hour",
        "rate_limit_change": "100000/hour",
        "rate_limit_reply_unknown": "100000/hour",
        "rate_limit_reply_unknown_all": "100000/hour",
        "rate_limit_geocode": "100000/hour",
        "rate_limit_geocode_client": "100000/hour",
        # One staff key makes thousands of requests in some tests (the fuzzer's 5,000 in 30 s);
        # tests/staff/test_request_limit.py holds keys to small limits.
        "rate_limit_staff": "1000000/minute",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


def bound_client(
    app_settings: Settings, db: Session, geocoder: Geocoder | None = None
) -> TestClient:
    app = create_app(app_settings, geocoder=geocoder)

    @contextmanager
    def session_in_test_transaction(_request: Request) -> Iterator[Session]:
        # A savepoint per request: a failed request undoes its own writes, as in production,
        # and what waits for the commit (after_commit) runs when it is released.
        with savepoint_as_transaction(db):
            yield db

    app.state.request_transaction = session_in_test_transaction
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(settings: Settings, db: Session) -> Iterator[TestClient]:
    with bound_client(settings, db) as test_client:
        yield test_client


@pytest.fixture
def staff_headers(db: Session):
    """staff_headers('consul') -> an Authorization header for a new key of that role."""

    def make(role: str) -> dict[str, str]:
        issued = staff_service.create_key(db, name=f"{role}-{secrets.token_hex(4)}", role=role)
        return {"Authorization": f"Bearer {issued.key}"}

    return make


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    """The fake Twilio REST server on loopback (the real SDK talks to it)."""
    fake = FakeTwilio().start()
    yield fake
    fake.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


class WarningRecords(logging.Handler):
    """The records of WARNING (or `level`) and above, and their messages, for a logger caplog
    cannot see: Alembic's logging set-up (a scratch database's migration) replaces the root
    handlers."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.messages: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.records.append(record)
