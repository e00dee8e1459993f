"""The dispatcher's record of a send against an erasure, on PostgreSQL's row locks: each takes
the rows both need in one order, so neither waits on the other (PostgreSQL would abort one)."""

import logging
import threading

import pytest
from sqlalchemy import delete, select, text, update

from service.citizens.models import Citizen, SmsOptOut
from service.citizens.service import erase_citizen
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.dispatcher import Dispatcher
from service.ledger.models import Alert
from service.privacy import PersonalDataVault
from tests.conftest import make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.fake_twilio import Answer
from tests.dispatch.seed import phone_of, scratch_database, seed_pending
from tests.lock_waits import until_one_waits_on_a_lock


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _deadlocks(factory) -> int:
    with factory() as session:
        return session.scalar(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )


def test_a_stop_the_provider_reports_while_its_record_is_erased_never_deadlocks(
    database_url, tmp_path, twilio, smtp
):
    """A review: the dispatcher recorded an SMS refused for STOP (Twilio 21610) by updating
    the alert rows first, then the record of the number; an erasure locks the record, then the
    alerts whose provider texts it scrubs. Each waited on the other (PostgreSQL aborted the
    dispatcher's write, which tried again). The dispatcher now writes the STOP first."""
    code = 21610
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    with scratch_database(database_url, tmp_path, "stop_erasure") as url:
        settings = make_settings(url, **notifier_settings(twilio, smtp))
        seed_pending(url, citizens=1, secret=settings.secret_key_bytes())
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with factory.begin() as session:
            # A retry (an earlier try's error kept), which the erasure's scrub of provider
            # texts must lock; and no e-mail yet, so that a fallback is a new row.
            session.execute(delete(Alert).where(Alert.channel == "email"))
            session.execute(update(Alert).values(last_error="timed out", attempts=1))
        dispatcher = Dispatcher.from_settings(
            settings, factory, vault=PersonalDataVault(settings.secret_key_bytes()), lanes=False
        )
        twilio.script(phone_of(0), Answer(400, code=code))
        kept = _Kept()
        logging.getLogger("anjeon.dispatch").addHandler(kept)
        deadlocks_before = _deadlocks(factory)
        failed: list[BaseException] = []
        locked, go_on = threading.Event(), threading.Event()

        def erase() -> None:
            try:
                with factory.begin() as session:
                    # As erase_citizen begins: the record locked; the rest once the
                    # dispatcher waits on it.
                    citizen = session.scalars(select(Citizen).with_for_update()).one()
                    locked.set()
                    go_on.wait(timeout=30)
                    erase_citizen(session, citizen=citizen)
            except BaseException as exc:  # reported to the test
                failed.append(exc)

        def send() -> None:
            try:
                dispatcher.step(now=utcnow(), channels=["sms"])
            except BaseException as exc:  # reported to the test
                failed.append(exc)

        eraser, sender = threading.Thread(target=erase), threading.Thread(target=send)
        try:
            eraser.start()
            assert locked.wait(timeout=30)
            sender.start()
            until_one_waits_on_a_lock(factory, why_not=lambda: failed)
            go_on.set()
            eraser.join(timeout=60)
            sender.join(timeout=60)
        finally:
            go_on.set()
            logging.getLogger("anjeon.dispatch").removeHandler(kept)
            dispatcher.close()
        assert not eraser.is_alive() and not sender.is_alive()
        assert failed == []
        assert not [line for line in kept.lines if "record failed" in line], kept.lines
        assert _deadlocks(factory) == deadlocks_before
        with factory() as session:
            [sms] = session.scalars(select(Alert).where(Alert.channel == "sms")).all()
            assert (sms.status, sms.error_code) == ("failed", str(code))
            citizen = session.scalars(select(Citizen)).one()
            assert citizen.status == "erased" and citizen.phone_hash is None
            # The number's STOP outlives the record, as any STOP does.
            stop = session.scalars(select(SmsOptOut)).one()
            assert stop.opted_out_at is not None
        # Nothing more reaches the erased citizen: the e-mail and its fallback are cancelled.
        dispatcher = Dispatcher.from_settings(
            settings, factory, vault=PersonalDataVault(settings.secret_key_bytes()), lanes=False
        )
        try:
            dispatcher.drain()
        finally:
            dispatcher.close()
        with factory() as session:
            emails = session.scalars(select(Alert.status).where(Alert.channel == "email")).all()
        assert set(emails) <= {"cancelled"} and smtp.received == []
        engine.dispose()
