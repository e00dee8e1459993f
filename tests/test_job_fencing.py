"""Scheduled jobs under a lease (service/scheduler.py run_job): a holder that loses its lease
while its run is in progress does not commit the run, so one holder's work lands at a time.

On PostgreSQL, two ways it can be lost, each with a job whose lease lasts a few seconds:
- the holder is slow but awake: another process takes the lapsed lease and runs the job; the
  first finds at its end that the lease is no longer its own and rolls back;
- the holder is paused inside its transaction (as by SIGSTOP): the server ends the idle
  transaction once the lease has passed, its locks go, and its run is lost with it.
(SQLite allows one writer: a paused holder's open transaction keeps every other writer out, so
no second run can start there at all.)"""

import threading
import time

import pytest
from sqlalchemy import select, update

from service.db import make_engine, make_session_factory, utcnow
from service.lease import SchedulerLease
from service.scheduler import Job, run_job
from tests.conftest import PG_URL, make_settings
from tests.dispatch.seed import scratch_database

pytestmark = pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set")


def _mark(session, name: str) -> None:
    session.add(SchedulerLease(name=name, holder=name, expires_at=utcnow()))
    session.flush()


def _marks(factory) -> set[str]:
    with factory() as session:
        names = session.scalars(select(SchedulerLease.name)).all()
    return {n for n in names if n.startswith("ran-by-")}


@pytest.fixture
def factory(tmp_path):
    assert PG_URL
    with scratch_database(PG_URL, tmp_path, "fence") as url:
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


def _run_in_thread(job: Job, factory, holder: str) -> threading.Thread:
    settings = make_settings(PG_URL or "")
    thread = threading.Thread(
        target=run_job, args=(job, factory, settings), kwargs={"holder": holder}
    )
    thread.start()
    return thread


def test_a_slow_holder_whose_lease_was_taken_rolls_its_run_back(factory):
    entered, go_on = threading.Event(), threading.Event()

    def slow(session, _settings):
        _mark(session, "ran-by-a")
        entered.set()
        # Awake but slow: a statement now and then (never idle as long as the lease).
        while not go_on.wait(0.5):
            session.execute(select(1))

    # A 6 s lease: a run must sit idle that long to be cut off, and a 3 s one was, before it
    # began, on a CI leg sharing two cores with three others.
    a = _run_in_thread(Job("fenced", 2, slow), factory, "a")
    assert entered.wait(10)
    time.sleep(6.5)  # the lease (6 s) lapses
    _run_in_thread(Job("fenced", 2, lambda s, _: _mark(s, "ran-by-b")), factory, "b").join(10)
    assert _marks(factory) == {"ran-by-b"}
    go_on.set()
    a.join(10)
    assert _marks(factory) == {"ran-by-b"}  # a's run was rolled back, not committed over b's


def test_a_holder_paused_in_its_transaction_is_replaced_without_waiting_for_it(factory):
    """Both runs write the same row: without the server ending the paused transaction, the
    successor would wait on its row lock for as long as the holder stays paused."""
    with factory.begin() as session:
        session.add(SchedulerLease(name="shared", holder="nobody", expires_at=utcnow()))
    entered, go_on = threading.Event(), threading.Event()

    def claim_shared(holder: str):
        def body(session, _settings) -> None:
            session.execute(
                update(SchedulerLease).where(SchedulerLease.name == "shared").values(holder=holder)
            )
            if holder == "a":
                entered.set()
                go_on.wait(20)  # idle in its transaction, as a stopped process would be

        return body

    a = _run_in_thread(Job("fenced", 1, claim_shared("a")), factory, "a")
    assert entered.wait(10)
    time.sleep(3.5)
    b = _run_in_thread(Job("fenced", 1, claim_shared("b")), factory, "b")
    b.join(10)
    assert not b.is_alive(), "the successor waited for the paused holder"
    go_on.set()
    a.join(10)
    with factory() as session:
        assert session.get(SchedulerLease, "shared").holder == "b"
