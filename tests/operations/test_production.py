"""Production mode means something at run time too: the API description is for staff, the
docs pages are off, and /metrics needs its own token (or is off)."""

import logging

import pytest

from service.dispatch.notifiers.base import OutgoingMessage
from service.dispatch.notifiers.console import ConsoleNotifier
from tests.conftest import bound_client, make_settings

PRODUCTION = {
    "environment": "production",
    "verification": "required",
    "approval": "required",
    "allow_console_notifier": True,
    "public_base_url": "https://alerts.example.go.kr",
    "duty_email": ["duty@alerts.example.go.kr"],
}


@pytest.fixture
def production(database_url, db):
    with bound_client(make_settings(database_url, **PRODUCTION), db) as client:
        yield client


def test_docs_are_off_and_the_description_needs_a_staff_key(production, staff_headers):
    assert production.get("/docs").status_code == 404
    assert production.get("/redoc").status_code == 404
    anonymous = production.get("/openapi.json")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    described = production.get("/openapi.json", headers=staff_headers("viewer"))
    assert described.status_code == 200 and "/v1/citizens" in described.json()["paths"]


def test_metrics_are_off_without_a_token(production):
    assert production.get("/metrics").status_code == 404


def test_metrics_need_their_token_when_one_is_set(database_url, db):
    settings = make_settings(database_url, **PRODUCTION, metrics_token="m" * 40)
    with bound_client(settings, db) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 401
        right = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
        assert right.status_code == 200 and "anjeon_database_up" in right.text


def test_development_keeps_docs_and_metrics_open(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/readyz").json()["notifiers"]


def test_readyz_tells_its_details_only_to_whoever_may_read_metrics(production, database_url, db):
    """Found by a probe: /readyz told anyone the exact schema revision, which SMS provider is
    used and whether its circuit is open (a moment to time other abuse). Its load balancer
    needs only the status."""
    assert production.get("/readyz").json() == {"status": "ready"}
    settings = make_settings(database_url, **PRODUCTION, metrics_token="m" * 40)
    with bound_client(settings, db) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        wrong = client.get("/readyz", headers={"Authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 200 and wrong.json() == {"status": "ready"}
        right = client.get("/readyz", headers={"Authorization": "Bearer " + "m" * 40}).json()
        assert right["schema"] == client.app.state.schema_head
        assert right["notifiers"] == {"console": "closed"}


def test_the_start_up_line_lists_what_is_enforced(database_url):
    settings = make_settings(database_url, **PRODUCTION)
    enforced = ", ".join(settings.enforced())
    assert "environment=production" in enforced and "verification=required" in enforced
    assert "approval=required" in enforced
    assert "metrics=off" in enforced and "api-docs=off" in enforced


def test_webhooks_that_carry_personal_data_are_signed_and_encrypted_in_production():
    """Found by a probe: a duty webhook (a citizen's name and place) could go out unsigned, to
    an http:// address, in production."""
    with pytest.raises(ValueError) as refused:
        make_settings("sqlite://", **PRODUCTION, duty_webhook_url="http://duty.example/hook")
    assert "ANJEON_WEBHOOK_SECRET to sign what ANJEON_DUTY_WEBHOOK_URL receive" in str(
        refused.value
    )
    assert "https:// for ANJEON_DUTY_WEBHOOK_URL" in str(refused.value)
    signed = make_settings(
        "sqlite://",
        **PRODUCTION,
        duty_webhook_url="https://duty.example/hook",
        staff_webhook_url="https://staff.example/hook",
        webhook_secret="a shared secret",
    )
    assert signed.pages_duty_staff


def test_mail_to_a_relay_elsewhere_is_encrypted_in_production():
    """Found by a privacy review: production took an SMTP relay on another host with neither
    STARTTLS nor SSL, so a duty notice (a citizen in need, their contacts and place), codes and
    check-in links crossed the network in clear. A relay on this machine is exempt."""
    smtp = {"email_notifier": "smtp", "smtp_from": "alerts@example.go.kr", "smtp_port": 25}
    with pytest.raises(ValueError, match="ANJEON_SMTP_STARTTLS or ANJEON_SMTP_SSL"):
        make_settings("sqlite://", **PRODUCTION, **smtp, smtp_host="mail.example.go.kr")
    for safe in ({"smtp_starttls": True}, {"smtp_ssl": True}, {"smtp_host": "localhost"}):
        make_settings(
            "sqlite://", **PRODUCTION, **{"smtp_host": "mail.example.go.kr", **smtp, **safe}
        )
    make_settings("sqlite://", **smtp, smtp_host="mail.example.go.kr")  # development: as before


def test_the_console_notifier_keeps_texts_out_of_a_production_log(caplog):
    """Found by a privacy review: allowed in production, the console notifier wrote a duty
    notice (name, phone, place, words), codes and check-in links to the log."""
    message = OutgoingMessage(
        alert_id=0,
        channel="email",
        to="duty@example.go.kr",
        subject="NEED HELP",
        text="Name: 김",
        reference="duty-1",
    )
    production = ConsoleNotifier.from_settings(make_settings("sqlite://", **PRODUCTION))
    development = ConsoleNotifier.from_settings(make_settings("sqlite://"))
    with caplog.at_level(logging.INFO, logger="anjeon.notifier.console"):
        production.send(message)
        development.send(message)
    kept, shown = (vars(r) for r in caplog.records if r.name == "anjeon.notifier.console")
    assert "text" not in kept and "subject" not in kept and kept["characters"] == len("Name: 김")
    assert shown["text"] == "Name: 김"  # make run's walkthrough reads alerts in the log
    assert "duty@example.go.kr" not in repr(kept) + repr(shown)
