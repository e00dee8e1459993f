"""A circuit breaker per notifier, shared by every dispatcher through its row in
notifier_circuit: a provider that is down is not hammered by N processes, and an urgent alert
goes out on the citizen's other channel instead of waiting for it.

    closed ──`failures` failed sends in a row──► open ──open_until──► half_open
      ▲                                            ▲                      │
      └─────────────── the probe went out ─────────┼──────────────────────┤
                                                   └──── the probe failed ┘

Failures are counted in each process (the sends are there); opening, probing and closing are
written to the shared row, so every process sees them at its next batch. Each re-opening
without a close in between waits twice as long, up to `max_open_s`. A failure is a Retry
outcome (timeouts, lost connections, 5xx, SMTP 4xx, 429): the provider did not take the
message. A permanent refusal (an invalid number) is an answer, so it counts as the provider up."""

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import utcnow
from service.dispatch.models import NotifierCircuit
from service.dispatch.notifiers.base import Outcome, Retry
from service.privacy import scrub_contacts

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: Final = (CLOSED, OPEN, HALF_OPEN)
# The value of the anjeon_notifier_circuit_state gauge for each state.
GAUGE: Final = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
# error_code of an alert held (not tried) because its channel's circuit is open.
HELD: Final = "circuit-open"
# error_code of an alert held (not tried) because the provider asked us to wait (a 429's
# Retry-After) while its batch was in hand.
THROTTLED: Final = "throttled"
_NOT_TRIED: Final = (HELD, THROTTLED)
# How long a half-open circuit waits for its prober before another process probes instead
# (the prober may have died with the probe in hand).
PROBE_TIMEOUT: Final = timedelta(seconds=60)
# How soon a process that lost the race for the probe looks again.
PROBE_WAIT: Final = timedelta(seconds=1)


@dataclass(frozen=True)
class CircuitPolicy:
    failures: int = 10
    open_s: float = 30.0
    max_open_s: float = 300.0

    def open_for(self, opened: int) -> timedelta:
        """How long the `opened`-th opening in a row lasts: doubling, up to max_open_s."""
        return timedelta(seconds=min(self.max_open_s, self.open_s * 2 ** max(opened - 1, 0)))


@dataclass(frozen=True)
class Gate:
    """What the circuit lets a dispatcher do with its channel now."""

    send: bool  # claim and send
    probe: bool = False  # send one message: the half-open probe
    until: datetime | None = None  # not sending: when to look again


class Circuit:
    """One notifier's breaker as one dispatcher process uses it."""

    def __init__(self, *, notifier: str, channel: str, policy: CircuitPolicy, worker: str) -> None:
        self.notifier, self.channel = notifier, channel
        self.policy = policy
        self.worker = worker
        self._lock = threading.Lock()
        self._failures = 0
        self._tripped = False
        self._last_error = ""
        self._probing = False
        self._probe_went = False
        self._open_until: datetime | None = None  # as this process last saw or wrote it

    # -- in the dispatcher's transactions ----------------------------------------------------

    def ensure_row(self, session: Session, *, now: datetime) -> None:
        """Every configured notifier has a row (closed), so /metrics shows it."""
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            dialect.insert(NotifierCircuit)
            .values(
                notifier=self.notifier,
                channel=self.channel,
                state=CLOSED,
                opened=0,
                changed_at=now,
            )
            .on_conflict_do_nothing()
        )

    def gate(self, session: Session, *, now: datetime) -> Gate:
        """Whether this process may send on the channel now; takes the probe when it is due."""
        row = session.get(NotifierCircuit, self.notifier, populate_existing=True)
        if row is None or row.state == CLOSED:
            with self._lock:
                # A probe of ours another process took over and closed is over: left set, one
                # failed send here opened the circuit, not `failures` in a row (a review).
                self._open_until = None
                self._probing = self._probe_went = False
            return Gate(send=True)
        if row.state == OPEN:
            assert row.open_until is not None
            if row.open_until > now:
                with self._lock:
                    self._open_until = row.open_until
                return Gate(send=False, until=row.open_until)
            taken = self._take_probe(session, now=now, state=OPEN, since=None)
        elif row.probe_by == self.worker:
            taken = True  # our probe found nothing to send last time: it still is ours
        else:
            stale = row.changed_at < now - PROBE_TIMEOUT
            taken = stale and self._take_probe(
                session, now=now, state=HALF_OPEN, since=row.changed_at
            )
        if not taken:
            return Gate(send=False, until=now + PROBE_WAIT)
        with self._lock:
            self._probing, self._probe_went, self._failures = True, False, 0
            self._open_until = None
        return Gate(send=True, probe=True)

    def _take_probe(
        self, session: Session, *, now: datetime, state: str, since: datetime | None
    ) -> bool:
        taking = update(NotifierCircuit).where(
            NotifierCircuit.notifier == self.notifier, NotifierCircuit.state == state
        )
        if state == OPEN:
            taking = taking.where(NotifierCircuit.open_until <= now)
        else:
            taking = taking.where(NotifierCircuit.changed_at == since)
        result = session.execute(
            taking.values(state=HALF_OPEN, probe_by=self.worker, changed_at=now).execution_options(
                synchronize_session=False
            )
        )
        return bool(result.rowcount)

    def settle(self, session: Session, *, now: datetime) -> str | None:
        """Write what this process's sends showed: open the circuit after a run of failures or
        a failed probe, close it after a probe went out. Returns the state written, if any."""
        with self._lock:
            tripped, probing, went = self._tripped, self._probing, self._probe_went
            reason = self._last_error
            if tripped or went:
                self._tripped = self._probing = self._probe_went = False
                self._failures = 0
        if tripped:
            self.ensure_row(session, now=now)  # a dispatcher that never ran start()
            row = session.get(
                NotifierCircuit, self.notifier, with_for_update=True, populate_existing=True
            )
            if row is None:
                return None
            if row.state == OPEN and row.open_until is not None and row.open_until > now:
                with self._lock:
                    self._open_until = row.open_until
                return None  # another process opened it meanwhile
            opened = 1 if row.state == CLOSED else row.opened + 1
            row.state, row.opened = OPEN, opened
            row.open_until = now + self.policy.open_for(opened)
            row.probe_by, row.changed_at = None, now
            row.last_error = scrub_contacts(reason)[:500] if reason else None
            with self._lock:
                self._open_until = row.open_until
            return OPEN
        if probing and went:
            closed = session.execute(
                update(NotifierCircuit)
                .where(
                    NotifierCircuit.notifier == self.notifier,
                    NotifierCircuit.state == HALF_OPEN,
                    NotifierCircuit.probe_by == self.worker,
                )
                .values(state=CLOSED, opened=0, open_until=None, probe_by=None, changed_at=now)
                .execution_options(synchronize_session=False)
            )
            return CLOSED if closed.rowcount else None
        return None

    # -- on the sending threads --------------------------------------------------------------

    def observe(self, outcome: Outcome) -> None:
        """Count one send's outcome."""
        with self._lock:
            if isinstance(outcome, Retry):
                if outcome.code in _NOT_TRIED or outcome.queue_full:
                    return  # not tried, or a sender's full queue: the provider is up
                self._failures += 1
                self._last_error = outcome.reason
                if self._probing or self._failures >= self.policy.failures:
                    self._tripped = True
            else:
                self._failures = 0
                if self._probing:
                    self._probe_went = True

    def tripped(self) -> bool:
        """The sends of the batch in hand stop: the provider is failing."""
        with self._lock:
            return self._tripped or (self._open_until is not None and self._open_until > utcnow())

    def held_until(self, now: datetime) -> datetime:
        """When an alert held by the open circuit is due again."""
        with self._lock:
            if self._open_until is not None and self._open_until > now:
                return self._open_until
        return now + timedelta(seconds=self.policy.open_s)


def states(session: Session) -> dict[str, str]:
    """Each notifier's circuit state, by notifier name."""
    rows = session.query(NotifierCircuit.notifier, NotifierCircuit.state).all()
    return {notifier: state for notifier, state in rows}
