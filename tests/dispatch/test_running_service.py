"""The service as `make run` starts it, with ANJEON_SMS_NOTIFIER=twilio: the scheduler's
dispatch job, woken when an advisory enqueues alerts, sends real Twilio API requests (to the
fake) and real e-mail, without waiting for its interval; /metrics shows it."""

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import sessionmaker

from service.app import create_app
from service.db import make_engine, make_session_factory
from service.dispatch.dispatcher import Dispatcher
from service.ledger.models import Alert
from service.ledger.wake import mark_enqueued, wake_after_commit
from service.privacy import PersonalDataVault
from service.scheduler import build_scheduler, wake_dispatch
from service.staff import service as staff_service
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import TEST_SECRET, make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.seed import scratch_database, seed_pending


def wait_for(condition, limit_s: float = 20.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def consul_headers(app) -> dict[str, str]:
    """A consul's key in the running app's own database."""
    with app.state.session_factory.begin() as session:
        key = staff_service.create_key(session, name="duty-officer", role="consul").key
    return {"Authorization": f"Bearer {key}"}


def sample(metrics: str, name: str) -> float:
    """One sample's value in Prometheus text format (0 when it has not been seen yet)."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_enqueued_alerts_are_sent_at_once_by_the_scheduler(database_url, tmp_path, twilio, smtp):
    with scratch_database(database_url, tmp_path, "service") as url:
        settings = make_settings(
            url,
            **notifier_settings(twilio, smtp),
            scheduler_enabled=True,
            dispatch_interval_s=3600,  # only the wake-up can explain a prompt send
            sweep_interval_s=3600,
        )
        app = create_app(settings)
        with TestClient(app) as client:
            consul = consul_headers(app)
            register(
                client,
                location={"lat": 35.5, "lon": 139.5},
                phone="010-9999-0001",
                email="run@example.com",
            )
            time.sleep(0.5)  # the start-up drain has run and found nothing
            assert twilio.posts == []
            created = client.post("/v1/advisories", json=advisory_body(), headers=consul)
            assert created.status_code == 201
            assert wait_for(lambda: len(twilio.messages) == 1 and len(smtp.received) == 1)
            [sms] = twilio.messages
            assert sms["to"] == "+821099990001" and "도쿄 여행자제" in sms["body"]
            view = client.get(f"/v1/advisories/{created.json()['id']}/alerts", headers=consul)
            assert wait_for(
                lambda: (
                    client.get(
                        f"/v1/advisories/{created.json()['id']}/alerts", headers=consul
                    ).json()["counts"]
                    == {"sent": {"sms": 1, "email": 1}}
                )
            ), view.json()

            # The ledger's figures are read from the database (a scratch one here) when scraped.
            def sent(channel: str) -> float:
                body = client.get("/metrics").text
                return sample(body, f'anjeon_alerts{{channel="{channel}",status="sent"}}')

            assert wait_for(lambda: sent("sms") == 1 and sent("email") == 1)
            metrics = client.get("/metrics").text
            assert sample(metrics, 'anjeon_alert_queue_depth{channel="sms"}') == 0
            assert sample(metrics, 'anjeon_alert_queue_depth{channel="email"}') == 0
            assert sample(metrics, 'anjeon_alert_send_seconds_count{notifier="twilio"}') >= 1


def test_email_is_not_held_up_behind_a_slow_sms_sender(database_url, tmp_path, twilio, smtp):
    """Twilio at 2 messages a second takes 3 s for 6 SMS; the 6 e-mails go out meanwhile."""
    with scratch_database(database_url, tmp_path, "lanes") as url:
        seed_pending(url, citizens=6, secret=TEST_SECRET.encode())
        settings = make_settings(url, **{**notifier_settings(twilio, smtp), "twilio_mps": 2})
        engine = make_engine(url)
        dispatcher = Dispatcher.from_settings(
            settings, make_session_factory(engine), vault=PersonalDataVault(TEST_SECRET.encode())
        )
        arrivals: list[tuple[float, str]] = []
        watcher_done = False

        def watch() -> None:
            seen_sms = seen_mail = 0
            while not watcher_done:
                if len(twilio.messages) > seen_sms:
                    seen_sms = len(twilio.messages)
                    arrivals.append((time.monotonic(), f"sms{seen_sms}"))
                if len(smtp.received) > seen_mail:
                    seen_mail = len(smtp.received)
                    arrivals.append((time.monotonic(), f"mail{seen_mail}"))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        tally = dispatcher.drain()
        watcher_done = True
        watcher.join()
        dispatcher.close()
        engine.dispose()
        assert tally.by_status == {"sent": 12}
        when = dict((name, at) for at, name in arrivals)
        assert when["mail6"] < when["sms4"]  # e-mail finished while SMS was still pacing


def test_the_scheduled_sweep_alerts_when_an_advisory_takes_effect(database_url, tmp_path):
    """Nothing is enqueued when the advisory is issued (it starts in a few seconds); the sweep,
    on its one-second schedule, enqueues it once time has made it effective."""
    with scratch_database(database_url, tmp_path, "sweep") as url:
        settings = make_settings(
            url, scheduler_enabled=True, sweep_interval_s=1, dispatch_interval_s=3600
        )
        app = create_app(settings)
        with TestClient(app) as client:
            consul = consul_headers(app)
            register(
                client,
                location={"lat": 35.5, "lon": 139.5},
                phone="010-9999-0002",
                channels=["sms"],
            )
            starts = datetime.now(UTC) + timedelta(seconds=3)
            created = client.post(
                "/v1/advisories",
                json=advisory_body(effective=starts.isoformat()),
                headers=consul,
            )
            assert created.status_code == 201
            alerts = f"/v1/advisories/{created.json()['id']}/alerts"
            assert client.get(alerts, headers=consul).json()["counts"] == {}
            assert wait_for(lambda: client.get(alerts, headers=consul).json()["counts"] != {})
            assert datetime.now(UTC) >= starts
            counts = client.get(alerts, headers=consul).json()["counts"]
            assert sum(n for by_channel in counts.values() for n in by_channel.values()) == 1


def test_the_service_stops_after_the_batch_in_hand_not_the_backlog(
    database_url, tmp_path, twilio, smtp
):
    """A review: `anjeon serve`'s shutdown stopped the scheduler, which waited for its running
    dispatch job, which ended only when nothing was due: 30 SMS at 1 a second held shutdown
    56 s, past an orchestrator's grace period (then SIGKILL, and the sends in flight lost
    their outcomes). The dispatcher is now told to claim nothing more first: the batch in hand
    is sent and recorded, the rest stays queued for the next process, nothing held."""
    citizens = 30
    with scratch_database(database_url, tmp_path, "shutdown") as url:
        seed_pending(url, citizens=citizens, secret=TEST_SECRET.encode())
        settings = make_settings(
            url,
            **{**notifier_settings(twilio, smtp), "twilio_mps": 1.0},
            scheduler_enabled=True,
            dispatch_interval_s=1,
            sweep_interval_s=3600,
        )
        app = create_app(settings)
        with TestClient(app):
            assert wait_for(lambda: len(twilio.messages) >= 2)
        texted = len(twilio.messages)
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            ledger = Counter(
                dict(
                    session.execute(
                        select(Alert.status, func.count())
                        .where(Alert.channel == "sms")
                        .group_by(Alert.status)
                    ).all()
                )
            )
        engine.dispose()
        assert texted < citizens, "the shutdown waited for the whole backlog"
        assert ledger["sent"] == texted  # each SMS the fake took is recorded
        assert ledger["claimed"] == 0  # the rest is queued again, held by nobody
        assert ledger["sent"] + ledger["pending"] + ledger["retry_wait"] == citizens


def _held_back_sms(url: str) -> int:
    """One of the seeded SMS, put out of reach (due in a day): the id of its row."""
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        alert_id = session.scalar(
            select(Alert.id).where(Alert.channel == "sms").order_by(Alert.id.desc()).limit(1)
        )
        session.execute(
            update(Alert)
            .where(Alert.id == alert_id)
            .values(due_at=datetime.now(UTC) + timedelta(days=1))
        )
    engine.dispose()
    return alert_id


def _made_due_with_a_wake(factory, alert_id: int) -> None:
    """A request's commit that makes the row due: it wakes the dispatcher once committed."""
    with factory.begin() as session:
        session.execute(update(Alert).where(Alert.id == alert_id).values(due_at=None))
        mark_enqueued(session)


def test_a_wake_as_the_dispatch_job_ends_runs_it_again(database_url, tmp_path, twilio, smtp):
    """A review: a commit's wake-up landing after the running drain's last look, while
    APScheduler still counted the job as running, was skipped (max_instances), and its alert
    waited for the next interval (an hour here)."""
    with scratch_database(database_url, tmp_path, "late_wake") as url:
        seed_pending(url, citizens=2, secret=TEST_SECRET.encode())
        late = _held_back_sms(url)
        settings = make_settings(
            url,
            **notifier_settings(twilio, smtp),
            scheduler_enabled=True,
            dispatch_interval_s=3600,  # only the wake-up can send the late SMS
            sweep_interval_s=3600,
            job_interval_s=3600,
        )
        engine = make_engine(url)
        factory = make_session_factory(engine)
        dispatcher = Dispatcher.from_settings(
            settings, factory, vault=PersonalDataVault(TEST_SECRET.encode())
        )
        scheduler = build_scheduler(settings, factory, [], dispatcher=dispatcher)
        wake_after_commit(factory, lambda: wake_dispatch(scheduler, dispatcher))
        drain = dispatcher.drain
        woke = threading.Event()

        def drain_then_a_commit(**kw):
            tally = drain(**kw)
            if not woke.is_set():
                woke.set()
                _made_due_with_a_wake(factory, late)
                time.sleep(0.2)  # what is left of the job's run, stretched
            return tally

        dispatcher.drain = drain_then_a_commit
        scheduler.start()
        try:
            assert woke.wait(20)
            assert wait_for(lambda: len(twilio.messages) == 2), "the late SMS waited an hour"
        finally:
            scheduler.shutdown(wait=True)
            dispatcher.close()
            engine.dispose()
        assert len({m["to"] for m in twilio.messages}) == 2


def test_a_lane_woken_just_after_the_drain_ended_goes_round_again(
    database_url, tmp_path, twilio, smtp
):
    """A review: the e-mail lane found nothing and ended the drain while the SMS lane waited;
    2 ms later a commit woke the drain, and drain() returned with that SMS still pending."""
    with scratch_database(database_url, tmp_path, "lane_wake") as url:
        seed_pending(url, citizens=1, secret=TEST_SECRET.encode())
        late = _held_back_sms(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        settings = make_settings(url, **notifier_settings(twilio, smtp))
        dispatcher = Dispatcher.from_settings(
            settings, factory, vault=PersonalDataVault(TEST_SECRET.encode())
        )
        wake_after_commit(factory, dispatcher.wake)
        lane_drain = dispatcher._drain
        email_idle = threading.Event()

        def watched(channels, **kw):
            tally = lane_drain(channels, **kw)
            if channels == ["email"] and not tally.claimed:
                email_idle.set()
            return tally

        dispatcher._drain = watched
        sms_woken = dispatcher._woken["sms"]

        class CommitAsTheDrainEnds(threading.Event):
            """The SMS lane's wait: the commit comes 2 ms after the e-mail lane ended it."""

            def wait(self, timeout=None):
                if email_idle.wait(5) and not getattr(self, "done", False):
                    self.done = True
                    time.sleep(0.002)
                    _made_due_with_a_wake(factory, late)
                return sms_woken.wait(timeout)

            def set(self):
                sms_woken.set()

            def clear(self):
                sms_woken.clear()

            def is_set(self):
                return sms_woken.is_set()

        dispatcher._woken["sms"] = CommitAsTheDrainEnds()
        try:
            dispatcher.drain()
        finally:
            dispatcher.close()
        with factory() as session:
            assert session.scalar(select(Alert.status).where(Alert.id == late)) == "sent"
        engine.dispose()


def test_the_dispatcher_is_woken_by_the_commit_not_by_a_savepoint(engine):
    """Found by a review: SQLAlchemy fires its commit event for a savepoint released too (a
    feed's import makes one per message), so the wake came before the alerts were committed,
    the dispatcher found nothing, and the commit then woke nobody: they waited a whole
    ANJEON_DISPATCH_INTERVAL_S."""
    factory = sessionmaker(bind=engine)
    woken: list[str] = []
    wake_after_commit(factory, lambda: woken.append("woken"))
    with factory() as session:
        session.execute(text("SELECT 1"))
        mark_enqueued(session)
        with session.begin_nested():
            session.execute(text("SELECT 2"))
        session.begin_nested().rollback()
        assert woken == []
        session.commit()
    assert woken == ["woken"]
