"""The dispatcher's record of a send against an erasure, on PostgreSQL's row locks: each takes
the rows both need in one order, so neither waits on the other (PostgreSQL would abort one).
An erasure locks the record, cancels the citizen's queued alerts, then scrubs the provider
texts of the rest; the dispatcher holds its batch's rows only at the end of its write."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from service.citizens.models import Citizen, SmsOptOut
from service.citizens.service import erase_citizen
from service.config import Settings
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


@dataclass
class _Scene:
    settings: Settings
    factory: sessionmaker[Session]
    failed: list[BaseException]

    def dispatcher(self) -> Dispatcher:
        vault = PersonalDataVault(self.settings.secret_key_bytes())
        return Dispatcher.from_settings(self.settings, self.factory, vault=vault, lanes=False)

    def thread(self, work: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported to the test
                self.failed.append(exc)

        return threading.Thread(target=run)

    def erase_while_sending(self, begin: Callable[[Session, Citizen], object]) -> None:
        """An erasure's transaction locks the record, as erase_citizen begins, and does
        `begin`; then a dispatcher sends the SMS; once it waits on a lock, the erasure goes on
        (erase_citizen) and commits. Both must end, neither having waited on the other."""
        begun, go_on = threading.Event(), threading.Event()

        def erase() -> None:
            with self.factory.begin() as session:
                citizen = session.scalars(select(Citizen).with_for_update()).one()
                begin(session, citizen)
                begun.set()
                go_on.wait(timeout=30)
                erase_citizen(session, citizen=citizen)

        dispatcher = self.dispatcher()
        eraser = self.thread(erase)
        sender = self.thread(lambda: dispatcher.step(now=utcnow(), channels=["sms"]))
        try:
            eraser.start()
            assert begun.wait(timeout=30)
            sender.start()
            until_one_waits_on_a_lock(self.factory, why_not=lambda: self.failed)
        finally:
            go_on.set()
            eraser.join(timeout=60)
            sender.join(timeout=60)
            dispatcher.close()
        assert not eraser.is_alive() and not sender.is_alive()


@contextmanager
def _scene(
    database_url: str, tmp_path, twilio, smtp, *, name: str, code: int, email_queued: bool
) -> Iterator[_Scene]:
    """One citizen owed an SMS that Twilio refuses with `code`, on a retry (an earlier try's
    error kept, which the erasure's scrub of provider texts must lock), and an e-mail of the
    same alert queued or not. Checks afterwards that the dispatcher never had to write again
    and that nothing more reaches the erased citizen."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    with scratch_database(database_url, tmp_path, name) as url:
        settings = make_settings(url, **notifier_settings(twilio, smtp))
        seed_pending(url, citizens=1, secret=settings.secret_key_bytes())
        engine = make_engine(url)
        scene = _Scene(settings, make_session_factory(engine), [])
        with scene.factory.begin() as session:
            if not email_queued:
                session.execute(delete(Alert).where(Alert.channel == "email"))
            session.execute(
                update(Alert)
                .where(Alert.channel == "sms")
                .values(last_error="timed out", attempts=1)
            )
        twilio.script(phone_of(0), Answer(400, code=code))
        kept = _Kept()
        logging.getLogger("anjeon.dispatch").addHandler(kept)
        try:
            yield scene
        finally:
            logging.getLogger("anjeon.dispatch").removeHandler(kept)
        assert scene.failed == []
        assert not [line for line in kept.lines if "record failed" in line], kept.lines
        with scene.factory() as session:
            [sms] = session.scalars(select(Alert).where(Alert.channel == "sms")).all()
            assert (sms.status, sms.error_code) == ("failed", str(code))
            citizen = session.scalars(select(Citizen)).one()
            assert citizen.status == "erased" and citizen.phone_hash is None
        dispatcher = scene.dispatcher()
        try:
            dispatcher.drain()
        finally:
            dispatcher.close()
        with scene.factory() as session:
            emails = session.scalars(select(Alert.status).where(Alert.channel == "email")).all()
            assert set(emails) <= {"cancelled"} and smtp.received == []
            assert session.scalar(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ) in (0, None)
        engine.dispose()


def test_a_stop_the_provider_reports_while_its_record_is_erased_never_deadlocks(
    database_url, tmp_path, twilio, smtp
):
    """A review: the dispatcher recorded an SMS refused for STOP (Twilio 21610) by updating
    the alert rows first, then the record of the number; an erasure locks the record, then the
    alerts whose provider texts it scrubs. Each waited on the other (PostgreSQL aborted the
    dispatcher's write, which tried again). The dispatcher now writes the STOP first."""
    with _scene(
        database_url, tmp_path, twilio, smtp, name="stop_erasure", code=21610, email_queued=False
    ) as scene:
        scene.erase_while_sending(lambda session, citizen: None)
        with scene.factory() as session:
            # The number's STOP outlives the record, as any STOP does.
            stop = session.scalars(select(SmsOptOut)).one()
            assert stop.opted_out_at is not None


def test_a_fallback_queued_while_its_record_is_erased_never_deadlocks(
    database_url, tmp_path, twilio, smtp
):
    """A review: the dispatcher recorded an SMS refused for good (21211, not a valid number)
    and then queued its e-mail fallback, which waited on the e-mail row an erasure had just
    cancelled; the erasure went on to scrub the provider text of the SMS row the dispatcher
    held. Each waited on the other. The dispatcher now queues fallbacks before it records."""
    with _scene(
        database_url, tmp_path, twilio, smtp, name="fallback_erasure", code=21211, email_queued=True
    ) as scene:

        def cancel_the_email(session: Session, citizen: Citizen) -> None:
            # forget_citizen's first step; its scrub of provider texts comes after.
            session.execute(
                update(Alert)
                .where(Alert.citizen_id == citizen.id, Alert.channel == "email")
                .values(status="cancelled")
            )

        scene.erase_while_sending(cancel_the_email)
