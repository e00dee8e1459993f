"""The service as `make run` starts it, with ANJEON_SMS_NOTIFIER=twilio: the scheduler's
dispatch job, woken when an advisory enqueues alerts, sends real Twilio API requests (to the
fake) and real e-mail, without waiting for its interval; /metrics shows it."""

import time

from fastapi.testclient import TestClient

from service.app import create_app
from service.staff import service as staff_service
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.seed import scratch_database


def wait_for(condition, limit_s: float = 20.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


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
            with app.state.session_factory.begin() as session:
                key = staff_service.create_key(session, name="duty-officer", role="consul").key
            consul = {"Authorization": f"Bearer {key}"}
            register(
                client,
                location={"lat": 35.5, "lon": 139.5},
                phone="010-9999-0001",
                email="run@example.com",
            )
            time.sleep(0.5)  # the start-up drain has run and found nothing
            assert twilio.posts == []
            before = client.get("/metrics").text
            sent_sms = sample(before, 'anjeon_alerts_sent_total{channel="sms"}')
            sent_email = sample(before, 'anjeon_alerts_sent_total{channel="email"}')
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
            # Counters are per process (other tests count too): compare with before.
            assert wait_for(lambda: "anjeon_alert_queue_depth 0.0" in client.get("/metrics").text)
            metrics = client.get("/metrics").text
            assert sample(metrics, 'anjeon_alerts_sent_total{channel="sms"}') == sent_sms + 1
            assert sample(metrics, 'anjeon_alerts_sent_total{channel="email"}') == sent_email + 1
            assert sample(metrics, 'anjeon_alert_send_seconds_count{notifier="twilio"}') >= 1
