"""Shared by the provider-fault tests (issue #16, item 3): settings for an outage of a few
seconds, citizens and an advisory through the real app, the real dispatcher run in real time
until the ledger is settled, and the counts the closing note quotes (lost, duplicate).

Time is scaled: an outage "of a minute" is WINDOW_S here, and the timeouts and backoff are
cut to match (a client timeout of 0.8-1.2 s instead of 10 s, backoff from 0.1 s to at most
0.5 s instead of 5 s to 900 s, a circuit open 0.5 s instead of 30 s). The retry budget is
raised (40 tries instead of 8) so that these tests are about classifying and reconciling
faults, not about spending the budget."""

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.dispatch.dispatcher import Dispatcher
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.fake_twilio import FakeTwilio
from tests.dispatch.smtp_sink import SmtpSink

WINDOW_S = 1.5
# Longer than either client timeout below. The timeouts are not shorter: CI runs four legs on
# two cores, and a relay's "250" that came 0.5 s late was once taken for a lost reply (its
# e-mail was rightly resent: one duplicate, and a red run).
STALL_S = 2.0
TOKYO = {"lat": 35.5, "lon": 139.5}


def fault_settings(
    database_url: str, twilio: FakeTwilio, smtp: SmtpSink, **overrides: object
) -> Settings:
    return make_settings(
        database_url,
        **{
            **notifier_settings(twilio, smtp),
            "twilio_timeout_s": 0.8,
            "smtp_timeout_s": 1.2,
            "dispatch_backoff_base_s": 0.1,
            "dispatch_backoff_cap_s": 0.5,
            "dispatch_max_attempts": 40,
            # The breaker's own timings, scaled alike (30 s open, up to 300 s, by default).
            "circuit_open_s": 0.5,
            "circuit_max_open_s": 2.0,
            **overrides,
        },
    )


@pytest.fixture
def faulty(
    db: Session, database_url: str, twilio: FakeTwilio, smtp: SmtpSink
) -> Iterator[Dispatcher]:
    """A dispatcher in the test's transaction with the scaled timings, closed afterwards
    (a test module takes it with `from tests.dispatch.faults import faulty as faulty`)."""
    made = dispatcher_in(db, fault_settings(database_url, twilio, smtp))
    yield made
    made.close()


def rows_of(db: Session, channel: str) -> list[Alert]:
    db.expire_all()
    return list(db.scalars(select(Alert).where(Alert.channel == channel).order_by(Alert.id)))


def enrol_sms(api: TestClient, n: int, *, block: int) -> list[str]:
    """`n` citizens in Tokyo reached by SMS only; their numbers in E.164."""
    numbers = []
    for i in range(n):
        register(
            api, location=TOKYO, phone=f"010-7{block:03d}-{i:04d}", email=None, channels=["sms"]
        )
        numbers.append(f"+82107{block:03d}{i:04d}")
    return numbers


def enrol_email(api: TestClient, n: int, *, block: int) -> list[str]:
    """`n` citizens in Tokyo reached by e-mail only; their addresses."""
    addresses = [f"fault{block}-{i}@example.com" for i in range(n)]
    for address in addresses:
        register(api, location=TOKYO, phone=None, email=address, channels=["email"])
    return addresses


def issue(api: TestClient, consul: dict[str, str], **overrides: object) -> dict:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()


def open_rows(db: Session) -> int:
    db.expire_all()
    return (
        db.scalar(
            select(func.count())
            .select_from(Alert)
            .where(Alert.status.in_(("pending", "retry_wait", "claimed")))
        )
        or 0
    )


def statuses(db: Session) -> Counter:
    db.expire_all()
    return Counter(
        dict(db.execute(select(Alert.status, func.count()).group_by(Alert.status)).all())
    )


def run_until_settled(dispatcher: Dispatcher, db: Session, *, limit_s: float = 60) -> float:
    """Drain in real time, waiting for retries to come due, until no alert is open; returns
    the seconds it took."""
    started = time.monotonic()
    while True:
        dispatcher.drain()
        if not open_rows(db):
            return time.monotonic() - started
        assert time.monotonic() - started < limit_s, f"still open: {statuses(db)}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Counts:
    """What arrived at the provider for the citizens owed one message each."""

    lost: int  # citizens who got nothing
    duplicate: int  # messages beyond the first, summed over citizens
    most: int  # the most copies one citizen got

    def line(self, fault: str, **more: object) -> str:
        extra = "".join(f" {k}={v}" for k, v in more.items())
        return f"FAULT {fault}: lost={self.lost} duplicate={self.duplicate}{extra}"


def counts(arrived: Counter, owed: list[str]) -> Counts:
    per = [arrived.get(who, 0) for who in owed]
    return Counts(
        lost=sum(1 for n in per if n == 0),
        duplicate=sum(max(0, n - 1) for n in per),
        most=max(per, default=0),
    )


def sms_counts(twilio: FakeTwilio, numbers: list[str]) -> Counts:
    with twilio.lock:
        return counts(Counter(m["to"] for m in twilio.messages), numbers)


def email_counts(smtp: SmtpSink, addresses: list[str]) -> Counts:
    """As counts(), and every copy an address got carries one and the same Message-ID."""
    with smtp.lock:
        received = list(smtp.received)
    for address in addresses:
        ids = {m["Message-ID"] for m in received if m["To"] == address}
        assert len(ids) <= 1, (address, ids)
    return counts(Counter(m["To"] for m in received), addresses)
