"""The service as `make run` starts it, with ANJEON_SMS_NOTIFIER=twilio: the scheduler's
dispatch job, woken when an advisory enqueues alerts, sends real Twilio API requests (to the
fake) and real e-mail, without waiting for its interval; /metrics shows it."""

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.db import make_engine, make_session_factory
from service.dispatch.dispatcher import Dispatcher
from service.ledger.models import Alert
from service.privacy import PersonalDataVault
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
