"""anjeon_alert_overdue_seconds (service/operations/figures.py read_queue): an open circuit
holds its channel's alerts but the urgent classes, and those it holds are not overdue."""

from datetime import timedelta

from sqlalchemy import update

from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.models import NotifierCircuit
from service.ledger import priority
from service.ledger.models import Alert
from service.operations.figures import read_queue
from tests.conftest import TEST_SECRET
from tests.dispatch.seed import scratch_database, seed_pending


def test_alerts_an_open_circuit_holds_are_not_overdue_but_urgent_ones_are(database_url, tmp_path):
    """An operator's review: with the SMS provider down and its circuit open, a level 3 told
    ahead of a trip (a class that is not urgent: not claimed while the circuit is open) made the
    overdue figure grow a second a second, and AnjeonAlertsOverdue paged beside
    AnjeonNotifierCircuitOpen, pointing at the queue, not at the provider."""
    with scratch_database(database_url, tmp_path, "overdue") as url:
        seed_pending(url, citizens=2, secret=TEST_SECRET.encode())
        engine = make_engine(url)
        now = utcnow()
        waited = now - timedelta(minutes=5)
        routine = max(priority.URGENT) + 1
        with make_session_factory(engine).begin() as session:
            session.execute(update(Alert).values(priority=routine, due_at=waited))
            session.add(
                NotifierCircuit(
                    notifier="twilio",
                    channel="sms",
                    state="open",
                    open_until=now + timedelta(minutes=1),
                    changed_at=now,
                )
            )
        with engine.connect() as connection:
            queue = read_queue(connection, now=now)
        assert "sms" not in queue.overdue_s  # held by the open circuit
        assert queue.overdue_s["email"] >= 299  # its own circuit is closed
        assert queue.depth["sms"] == 2  # still open, still counted as waiting

        with make_session_factory(engine).begin() as session:
            first = session.query(Alert.id).filter(Alert.channel == "sms").limit(1).scalar()
            session.execute(
                update(Alert).where(Alert.id == first).values(priority=min(priority.URGENT))
            )
        with engine.connect() as connection:
            assert read_queue(connection, now=now).overdue_s["sms"] >= 299  # urgent: due

        # One notifier sending both channels has one circuit, whose row names the channel
        # that wrote it first: it holds e-mail too (a review).
        with make_session_factory(engine).begin() as session:
            session.execute(update(Alert).values(priority=routine))
        both = {"twilio": ["sms", "email"]}
        with engine.connect() as connection:
            assert read_queue(connection, now=now, notifier_channels=both).overdue_s == {}

        with make_session_factory(engine).begin() as session:
            session.execute(update(NotifierCircuit).values(open_until=now - timedelta(seconds=1)))
        with engine.connect() as connection:
            assert read_queue(connection, now=now).overdue_s["sms"] >= 299  # open_until passed
        engine.dispose()
