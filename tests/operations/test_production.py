"""Production mode means something at run time too: the API description is for staff, the
docs pages are off, and /metrics needs its own token (or is off)."""

import pytest

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
