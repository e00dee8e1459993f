"""Check-in fixtures: the dispatch ones (fake Twilio, SMTP sink, an app whose notifiers point at
them, a dispatcher inside the test's transaction), and signed inbound SMS as Twilio sends them."""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from tests.dispatch.conftest import (  # noqa: F401 - fixtures
    api,
    consul,
    dispatch_settings,
    dispatcher,
)
from tests.dispatch.fake_twilio import AUTH_TOKEN

PUBLIC = "https://anjeon.test"
INBOUND = "/v1/webhooks/twilio/inbound"
TWILIO_NUMBER = "+15005550006"


def inbound_form(sender: str, body: str, sid: str = "SM" + "a" * 32) -> dict[str, str]:
    """The fields Twilio POSTs for an incoming SMS (a subset, as it sends them)."""
    return {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": TWILIO_NUMBER,
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }


def signed(form: dict[str, str], path: str = INBOUND) -> dict[str, str]:
    """X-Twilio-Signature exactly as Twilio computes it: over our public URL and the form."""
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form),
    }


@pytest.fixture
def reply(api: TestClient) -> Callable[..., object]:  # noqa: F811 - the imported fixture
    """reply(sender, body) -> the response to a signed inbound SMS."""

    def send(sender: str, body: str, *, sign: bool = True):
        form = inbound_form(sender, body)
        headers = signed(form) if sign else {"Content-Type": "application/x-www-form-urlencoded"}
        return api.post(INBOUND, data=form, headers=headers)

    return send


@pytest.fixture
def app_sessions_in_test(api: TestClient, db: Session) -> None:  # noqa: F811
    """Work the app does after a response (the duty notice) sees the test's transaction."""
    api.app.state.session_factory = sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )
