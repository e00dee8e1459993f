"""Two staff acting on one advisory at once, on PostgreSQL (SQLite has one writer at a time):
a cancel that read the advisory while a revision of it was under way took the revision's own
number (a review's reading of cancel_advisory, which took no lock). It now waits for the
revision and comes after it."""

import dataclasses
import threading

import pytest
from sqlalchemy import select

from service.advisories import service
from service.advisories.models import Advisory, AdvisoryRevision
from service.db import make_engine, make_session_factory, utcnow
from tests.dispatch.seed import scratch_database, seeded_advisory
from tests.lock_waits import until_one_waits_on_a_lock


def test_a_cancel_during_a_revision_comes_after_it(database_url, tmp_path):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's race: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    with scratch_database(database_url, tmp_path, "cancel_race") as url:
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with factory.begin() as session:
            advisory = seeded_advisory(utcnow())
            session.add(advisory)
        public_id = advisory.public_id
        failed: list[BaseException] = []

        def cancel() -> None:
            try:
                with factory.begin() as session:
                    read = session.scalar(select(Advisory).where(Advisory.public_id == public_id))
                    assert read is not None
                    service.cancel_advisory(
                        session, advisory=read, cancelled_by="kim", now=utcnow()
                    )
            except BaseException as exc:  # reported to the test
                failed.append(exc)

        canceller = threading.Thread(target=cancel)
        with factory.begin() as session:
            revised = session.scalar(select(Advisory).where(Advisory.public_id == public_id))
            assert revised is not None
            service.lock_advisory(session, revised)
            draft = service.draft_of(revised)
            draft = dataclasses.replace(draft, message={"ko": "고친 안내", "en": "Corrected"})
            service.revise_advisory(
                session, advisory=revised, draft=draft, changed_by="lee", now=utcnow(), match=False
            )
            canceller.start()  # it reads revision 1: the revision is not committed yet
            until_one_waits_on_a_lock(engine.connect, why_not=lambda: failed)
        canceller.join(timeout=60)
        assert not canceller.is_alive() and failed == []
        with factory() as session:
            ended = session.scalar(select(Advisory).where(Advisory.public_id == public_id))
            assert ended is not None and ended.status == "cancelled" and ended.revision == 3
            revisions = session.execute(
                select(AdvisoryRevision.revision, AdvisoryRevision.change)
                .where(AdvisoryRevision.advisory_id == ended.id)
                .order_by(AdvisoryRevision.revision)
            ).all()
            assert revisions == [(1, "issued"), (2, "revised"), (3, "cancelled")]
            # The all-clear carries the words in force when it was cancelled: the revision's.
            assert ended.message_en == "Corrected"
        engine.dispose()
