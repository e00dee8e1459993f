"""Dispatch fixtures: the fake Twilio and a real SMTP server on loopback, settings that point
the notifiers at them, and a dispatcher that works inside the test's rolled-back transaction."""

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.dispatch.dispatcher import Dispatcher
from service.privacy import PersonalDataVault
from tests.conftest import bound_client, make_settings
from tests.dispatch import processes
from tests.dispatch.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.dispatch.smtp_sink import SmtpSink


def notifier_settings(twilio: FakeTwilio, smtp: SmtpSink) -> dict[str, object]:
    return {
        "sms_notifier": "twilio",
        "email_notifier": "smtp",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from": "+15005550006",
        "twilio_api_base": twilio.url,
        "twilio_mps": 0,
        "twilio_timeout_s": 2.0,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_from": "alerts@anjeon.test",
        "public_base_url": "https://anjeon.test",
        "dispatch_backoff_base_s": 0.01,
        "dispatch_backoff_cap_s": 0.05,
    }


@pytest.fixture(autouse=True)
def _no_dispatcher_process_outlives_its_test() -> Iterator[None]:
    yield
    processes.reap()


@pytest.fixture
def dispatch_settings(database_url: str, twilio: FakeTwilio, smtp: SmtpSink) -> Settings:
    return make_settings(database_url, **notifier_settings(twilio, smtp))


@pytest.fixture
def api(dispatch_settings: Settings, db: Session) -> Iterator[TestClient]:
    with bound_client(dispatch_settings, db) as test_client:
        yield test_client


class _TurnTakingSession(Session):
    """A session on the test's one connection, which one thread at a time may use: the
    dispatcher's send threads write too (outbox.mark_sending), beside its recording thread."""

    def __enter__(self) -> "_TurnTakingSession":
        self.info["turn"].acquire()
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)  # type: ignore[arg-type]
        finally:
            self.info["turn"].release()


def dispatcher_in(db: Session, settings: Settings) -> Dispatcher:
    """A dispatcher whose transactions are savepoints in the test's transaction (one
    connection, so channels take turns instead of running in parallel lanes, and threads take
    turns with the connection)."""
    factory = sessionmaker(
        bind=db.connection(),
        class_=_TurnTakingSession,
        info={"turn": threading.RLock()},
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )
    return Dispatcher.from_settings(
        settings, factory, vault=PersonalDataVault(settings.secret_key_bytes()), lanes=False
    )


@pytest.fixture
def dispatcher(db: Session, dispatch_settings: Settings) -> Iterator[Dispatcher]:
    made = dispatcher_in(db, dispatch_settings)
    yield made
    made.close()


@pytest.fixture
def consul(staff_headers) -> dict[str, str]:
    return staff_headers("consul")
