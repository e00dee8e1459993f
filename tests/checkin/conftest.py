"""Check-in fixtures: the dispatch ones (fake Twilio, SMTP sink, an app whose notifiers point at
them, a dispatcher inside the test's transaction), and signed inbound SMS as Twilio sends them."""

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from service.advisories.models import Advisory
from service.db import utcnow
from service.dispatch.reference import Links
from tests.advisories.builders import advisory_body
from tests.builders import register
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


def inbound_form(sender: str, body: str, sid: str | None = None) -> dict[str, str]:
    """The fields Twilio POSTs for an incoming SMS (a subset, as it sends them); each message
    its own MessageSid unless one is given (a retry repeats it)."""
    sid = sid or "SM" + uuid.uuid4().hex
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


@dataclass(frozen=True)
class Asked:
    """A registered citizen whom an urgent advisory asked "are you safe?" (the check-in open)."""

    public_id: str
    phone: str  # E.164, as Twilio gives it in From
    email: str
    name: str
    manage: dict[str, str]  # the citizen's own Authorization header
    advisory: str  # the advisory's public id
    token: str  # of the /c/ link the SMS carried


_LINK = re.compile(r"https://anjeon\.test/c/([A-Za-z0-9_-]+)")


@pytest.fixture
def asked(api: TestClient, db: Session, consul, dispatcher, twilio) -> Callable[..., Asked]:  # noqa: F811
    """asked(language="ko", name=...) -> Asked: registers a citizen in Tokyo with SMS and e-mail,
    issues a level-4 advisory there (a level that asks, never deferred by quiet hours) and sends
    its alerts."""

    def make(*, language: str = "ko", name: str = "홍길동 Gildong") -> Asked:
        public_id, manage, body = register(
            api,
            name=name,
            language=language,
            location={"lat": 35.5, "lon": 139.5},
            channels=["sms", "email"],
        )
        response = api.post("/v1/advisories", json=advisory_body(level=4), headers=consul)
        assert response.status_code == 201, response.text
        dispatcher.drain()
        phone = "+82" + body["phone"].replace("-", "")[1:]
        advisory = db.scalar(select(Advisory.id).where(Advisory.public_id == response.json()["id"]))
        # Earlier urgent advisories there may have asked them too (matched on registration).
        links = Links(PUBLIC, api.app.state.registry.vault)
        tokens = [link.group(1) for sms in twilio.bodies_to(phone) if (link := _LINK.search(sms))]
        [token] = [t for t in tokens if links.read_checkin(t, utcnow()).advisory_id == advisory]
        return Asked(
            public_id=public_id,
            phone=phone,
            email=body["email"],
            name=name,
            manage=manage,
            advisory=response.json()["id"],
            token=token,
        )

    return make
