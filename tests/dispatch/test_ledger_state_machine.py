"""A hypothesis state machine over the real ledger code (claim, send, fail, crash, status
callback, expiry, erasure) with an in-process provider that remembers what it accepted.
Invariants: no message reaches the provider twice; a state never moves back; a row marked
sent was accepted; and once the clock runs on, every row settles."""

import tempfile
from datetime import timedelta
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import select, text, update

from service.advisories.models import Advisory
from service.citizens.models import Citizen
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch import delivery
from service.dispatch.dispatcher import Dispatcher, Policy
from service.dispatch.notifiers.base import (
    DeliveryReport,
    Failed,
    Lookup,
    Notifier,
    Retry,
    Sent,
)
from service.dispatch.render import Renderer
from service.ledger import outbox, states
from service.ledger.models import Alert
from service.ledger.outbox import Claimed
from service.ledger.states import OPEN as OPEN_STATES
from service.migrate import upgrade
from service.privacy import PersonalDataVault
from tests.conftest import TEST_SECRET
from tests.dispatch.seed import seed_pending

_DB = Path(tempfile.mkdtemp()) / "ledger.db"
_URL = f"sqlite:///{_DB}"
upgrade(_URL)
_ENGINE = make_engine(_URL)
_FACTORY = make_session_factory(_ENGINE)
# Open (0) -> sent (1) -> final (2): retries move between open states, never back from sent.
RANK = {"pending": 0, "retry_wait": 0, "claimed": 0, "sent": 1}
OUTCOMES = st.sampled_from(["sent", "retry", "unknown", "fail"])


class Provider(Notifier):
    """Accepts, refuses or 'times out after accepting' as told; answers look-ups truthfully."""

    name = "provider"
    channels = ("sms", "email")

    def __init__(self) -> None:
        self.accepted: dict[str, int] = {}  # reference -> times accepted
        self.plan: list[str] = []

    def accept(self, reference: str) -> None:
        self.accepted[reference] = self.accepted.get(reference, 0) + 1

    def send(self, message):
        outcome = self.plan.pop(0) if self.plan else "sent"
        if outcome in ("sent", "unknown"):
            self.accept(message.reference)
        if outcome == "sent":
            return Sent(provider_ref=f"P{message.alert_id}")
        if outcome == "unknown":
            return Retry(reason="timed out after sending", outcome_unknown=True)
        if outcome == "retry":
            return Retry(reason="503", code="503")
        return Failed(reason="invalid", code="21211")

    def lookup(self, message, *, since):
        if message.reference in self.accepted:
            return Lookup(found=Sent(provider_ref=f"P{message.alert_id}"))
        return Lookup()


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        with _ENGINE.begin() as conn:
            for table in ("alert", "citizen_place", "citizen", "advisory_revision", "advisory"):
                conn.execute(text(f"DELETE FROM {table}"))
        seed_pending(_URL, citizens=3, secret=TEST_SECRET.encode())
        self.provider = Provider()
        self.vault = PersonalDataVault(TEST_SECRET.encode())
        self.dispatcher = Dispatcher(
            _FACTORY,
            notifiers={"sms": self.provider, "email": self.provider},
            renderer=Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3),
            vault=self.vault,
            public_base_url="https://anjeon.test",
            policy=Policy(batch=4, threads=2, lease_s=60, max_attempts=4, backoff_base_s=1),
        )
        self.clock = utcnow()
        self.progress: dict[int, int] = {}

    def reference(self, row: Alert | Claimed) -> str:
        """What the message of this row carries to be found by: the seeded advisory is level 3,
        so its SMS asks for a check-in and carries the check-in link's token instead of the
        alert's reference (the same token on every attempt of the row)."""
        if row.channel == "sms":
            return self.dispatcher.links.checkin_token(
                citizen_id=row.citizen_id, advisory_id=row.advisory_id, asked_at=row.created_at
            )
        return self.dispatcher.links.reference(row.id)

    def rows(self) -> list[Alert]:
        with _FACTORY() as session:
            return list(session.scalars(select(Alert).order_by(Alert.id)))

    @rule(plan=st.lists(OUTCOMES, max_size=6))
    def dispatch(self, plan: list[str]) -> None:
        self.provider.plan = list(plan)
        self.dispatcher.step(now=self.clock)

    @rule(channel=st.sampled_from(["sms", "email"]), sends=st.integers(0, 4))
    def crash_mid_batch(self, channel: str, sends: int) -> None:
        """A dispatcher claims a batch, the provider accepts some, and it dies unrecorded."""
        with _FACTORY.begin() as session:
            claimed = outbox.claim(
                session, channel=channel, now=self.clock, limit=4, lease_s=60, worker="doomed"
            )
        for row in claimed[:sends]:
            reference = self.reference(row)
            # As the real dispatcher does: an outcome in doubt is looked up, not resent.
            if not (row.outcome_unknown and reference in self.provider.accepted):
                self.provider.accept(reference)

    @rule(seconds=st.sampled_from([1, 30, 61, 600]))
    def time_passes(self, seconds: int) -> None:
        self.clock += timedelta(seconds=seconds)

    @rule(index=st.integers(0, 5), status=st.sampled_from(["sent", "delivered", "undelivered"]))
    def status_callback(self, index: int, status: str) -> None:
        """The provider reports on a message it accepted (in any order, any number of times)."""
        accepted = [row for row in self.rows() if self.reference(row) in self.provider.accepted]
        if not accepted:
            return
        row = accepted[index % len(accepted)]
        with _FACTORY.begin() as session:
            delivery.apply_report(
                session,
                alert_id=row.id,
                attempt=row.attempts,
                channel=row.channel,
                report=DeliveryReport(provider_ref=f"P{row.id}", status=status),
                now=self.clock,
            )

    @rule()
    def advisory_ends(self) -> None:
        with _FACTORY.begin() as session:
            session.execute(update(Advisory).values(expires=self.clock + timedelta(seconds=5)))

    @rule(index=st.integers(0, 2))
    def citizen_erased(self, index: int) -> None:
        with _FACTORY.begin() as session:
            ids = list(session.scalars(select(Citizen.id).order_by(Citizen.id)))
            session.execute(update(Citizen).where(Citizen.id == ids[index]).values(status="erased"))

    @invariant()
    def nothing_reaches_the_provider_twice(self) -> None:
        assert all(times == 1 for times in self.provider.accepted.values()), self.provider.accepted

    @invariant()
    def states_never_move_back_and_sent_means_accepted(self) -> None:
        for row in self.rows():
            assert row.status in states.ALL, row.status
            rank = RANK.get(row.status, 2)
            assert rank >= self.progress.get(row.id, 0), (row.id, row.status)
            self.progress[row.id] = rank
            if row.status in ("sent", "delivered"):
                assert self.reference(row) in self.provider.accepted

    def teardown(self) -> None:
        # Let time run on: every row settles, nothing stays claimed or pending.
        for _ in range(40):
            self.clock += timedelta(minutes=30)
            self.provider.plan = []
            self.dispatcher.step(now=self.clock)
        open_rows = [(r.id, r.status) for r in self.rows() if r.status in OPEN_STATES]
        self.dispatcher.close()
        assert open_rows == []
        self.nothing_reaches_the_provider_twice()


LedgerMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = LedgerMachine.TestCase
