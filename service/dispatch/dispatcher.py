"""The dispatcher: drains the alert ledger. Claim a batch (short transaction), send outside any
transaction on a thread pool within each notifier's rate, record outcomes as they come (short
transactions). The order of concerns is fixed here, not in notifiers: reconcile an unknown
outcome before any resend, then retry with backoff or give up, then fall back to the other
channel."""

import dataclasses
import logging
import os
import random
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from limits.storage import Storage
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.levels import is_urgent
from service.config import Settings
from service.db import utcnow, wait_at_most
from service.dispatch import metrics
from service.dispatch.circuit import HELD, THROTTLED, Circuit, CircuitPolicy, Gate
from service.dispatch.content import AlertContent
from service.dispatch.notifiers.base import (
    Failed,
    Notifier,
    Outcome,
    OutgoingMessage,
    Retry,
    Sent,
)
from service.dispatch.notifiers.registry import build_notifiers
from service.dispatch.pacing import SenderRate, open_storage
from service.dispatch.quiet_hours import quiet_until, zone_of
from service.dispatch.recipients import (
    AdvisoryState,
    ContentCache,
    Recipient,
    advisory_states,
    recipients,
)
from service.dispatch.reference import Links
from service.dispatch.render import Rendered, Renderer
from service.dispatch.sms_opt_out import hear_opt_out
from service.dispatch.workers import DatabaseClock, Heartbeat, Holdings, SendRate
from service.geo.matching import Target, Today, reaches_a_place
from service.ledger import notices, outbox, priority
from service.ledger.models import Ahead
from service.ledger.outbox import Claimed, Decision
from service.ledger.states import (
    CANCELLED,
    CODE_UNPREPARED,
    CODE_UNREADABLE,
    EXPIRED,
    FAILED,
    MAYBE_SENT,
    REASON_ALERTS_NOBODY,
    REASON_CANCELLED_BEFORE_SENDING,
    REASON_CITIZEN_ERASED,
    REASON_ENDED_BEFORE_SENDING,
    RETRY_WAIT,
    SENT,
    SUPERSEDED,
)
from service.privacy import PersonalDataVault
from service.send_window import SendWindowClosed, send_window

log = logging.getLogger("anjeon.dispatch")
# error_code of an alert whose earlier try, of unknown outcome, could not be looked up.
LOOKUP_FAILED = "lookup-failed"
# A try the settle time would push past the advisory's end goes this long before it instead.
_BEFORE_THE_END = timedelta(seconds=1)
OTHER_CHANNEL = {"sms": "email", "email": "sms"}
_RECORD_EVERY = 250  # outcomes: the most a crash can leave unrecorded
_CHUNK = 16  # sends per pool task
_RECORD_AFTER_S = 0.5
_CLAIM_AHEAD_S = 10.0  # a paced channel claims at most this long a stretch of sends
# A record the database refused for want of a connection is tried again for this long (the
# sends happened; while it waits, the lane claims nothing more).
_RECORD_PATIENCE_S = 900.0
_DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
_LANE_POLL_S = 0.1  # how often a lane with nothing due looks again while another is busy
_RETRY_AFTER_MOST_S = 60.0  # the longest a provider's Retry-After pauses a channel


def _database_down(exc: SQLAlchemyError) -> bool:
    """The database is away, or ended this connection (PostgreSQL's idle-in-transaction bound
    on a process that was paused mid-transaction is an InternalError): try again on a new one."""
    return isinstance(exc, _DATABASE_DOWN) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


@dataclass(frozen=True)
class Policy:
    batch: int = 500
    threads: int = 8
    # A claim's lease; the heartbeat renews it every quarter of it while the sends go on.
    lease_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 900.0
    # Level 1-2 alerts a citizen gets in an hour, at most (0: no cap). Levels 3, 4, special and
    # all-clears are never held: the cap keeps routine notices from becoming a flood.
    routine_per_hour: int = 0
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    # A sender whose provider queue is full: no sends for hold_s, then back to its rate over
    # ramp_s (service/dispatch/pacing.py).
    hold_s: float = 30.0
    ramp_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Policy":
        return cls(
            batch=settings.dispatch_batch,
            threads=settings.dispatch_threads,
            lease_s=settings.dispatch_lease_s,
            max_attempts=settings.dispatch_max_attempts,
            backoff_base_s=settings.dispatch_backoff_base_s,
            backoff_cap_s=settings.dispatch_backoff_cap_s,
            routine_per_hour=settings.max_routine_alerts_per_hour,
            circuit=CircuitPolicy(
                failures=settings.circuit_failures,
                open_s=settings.circuit_open_s,
                max_open_s=settings.circuit_max_open_s,
            ),
            hold_s=settings.sender_hold_s,
            ramp_s=settings.sender_ramp_s,
        )

    @property
    def send_margin_s(self) -> float:
        """A quarter lease: a send begins only while its claim has this long left, and within
        this long of the mark that names it (_SendMarks)."""
        return self.lease_s / 4

    def backoff_s(self, attempts: int) -> float:
        """Exponential backoff with full jitter (AWS's "full jitter": uniform over [0, cap])."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(attempts - 1, 0))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


@dataclass
class Tally:
    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    reconciled: int = 0
    fallbacks: int = 0

    def add(self, decision: Decision) -> None:
        self.by_status[decision.status] = self.by_status.get(decision.status, 0) + 1

    def merge(self, other: "Tally") -> None:
        self.claimed += other.claimed
        self.reconciled += other.reconciled
        self.fallbacks += other.fallbacks
        for status, n in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n


@dataclass(frozen=True)
class _Job:
    row: Claimed
    message: OutgoingMessage
    expires: datetime | None
    # The keyed hash of the number texted (SMS), read with it: a STOP the provider reports is
    # kept for that number, not for one the record changed to meanwhile.
    phone_hash: str | None = None
    started: datetime | None = None  # no later than the send began


@dataclass
class _Routine:
    """Routine alerts each citizen had in the last hour (the cap), and the newest revision of
    each advisory among them."""

    sent: dict[int, int] = field(default_factory=dict)
    told: dict[int, dict[int, int]] = field(default_factory=dict)

    def count(self, citizen_id: int, advisory_id: int, revision: int, messages: int) -> None:
        self.sent[citizen_id] = self.sent.get(citizen_id, 0) + messages
        held = self.told.setdefault(citizen_id, {})
        held[advisory_id] = max(revision, held.get(advisory_id, revision))

    def replaced(self, row: Claimed) -> bool:
        """The row is a newer revision's warning of an advisory they had this hour: it replaces
        the words they hold (not a roll call's ask, which the cap holds as any other)."""
        had = self.told.get(row.citizen_id, {}).get(row.advisory_id)
        return row.checkin_round == 0 and had is not None and row.revision > had


class Dispatcher:
    """Sends what the ledger holds. Safe to run in several processes: rows are claimed under a
    lease (with SKIP LOCKED on PostgreSQL), and every write checks the claim is still ours."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        notifiers: dict[str, Notifier],
        renderer: Renderer,
        vault: PersonalDataVault,
        public_base_url: str,
        policy: Policy | None = None,
        worker: str | None = None,
        lanes: bool = True,
        rate_storage: Storage | None = None,
        shared_rate: bool = False,
    ) -> None:
        self.factory = factory
        self.notifiers = notifiers
        self.renderer = renderer
        self.vault = vault
        self.links = Links(public_base_url, vault)
        self.policy = policy or Policy()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:64]
        # One shared rate per sender (a notifier serving two channels has one sender), in the
        # rate-limit storage when other processes share it; None: no rate of its own.
        self._senders: dict[int, SenderRate | None] = {
            id(n): SenderRate(
                key=n.sender_key(),
                per_second=n.max_per_second,
                storage=rate_storage,
                shared=shared_rate,
                live=self._live,
                hold_s=self.policy.hold_s,
                ramp_s=self.policy.ramp_s,
            )
            if n.max_per_second
            else None
            for n in notifiers.values()
        }
        self._segments: dict[str, float] = {}  # segments per message, of recent batches
        self._send_s: dict[str, float] = {}  # seconds a send takes, lately (observed_send)
        self._paused_until: dict[str, datetime] = {}
        # A provider's Retry-After, on the monotonic clock: the sends of the batch in hand that
        # have not started yet wait for the next batch instead of meeting the same 429.
        self._throttled_until: dict[str, float] = {}
        self._contents = ContentCache()
        # One pool per channel: SMS threads waiting on a 1-per-second sender must not hold up
        # e-mail. With `lanes`, channels are also claimed and recorded in parallel (each lane
        # its own thread and sessions); without, in turn (a factory bound to one connection).
        self.lanes = lanes
        self._pools = {
            channel: ThreadPoolExecutor(self.policy.threads, thread_name_prefix=f"send-{channel}")
            for channel in notifiers
        }
        self._woken = {channel: threading.Event() for channel in notifiers}
        self._can_fall_back: set[int] = set()  # claimed rows whose citizen has the other contact
        # The longest a provider may still act on a try of unknown outcome (an all-clear waits).
        self._settle_s = max((n.settle_s for n in notifiers.values()), default=0.0)
        self.holdings = Holdings()
        self.clock = DatabaseClock()  # the leases' clock, set by the heartbeat
        self.rates = SendRate()
        self.circuits = {
            channel: Circuit(
                notifier=notifier.name,
                channel=channel,
                policy=self.policy.circuit,
                worker=self.worker,
            )
            for channel, notifier in notifiers.items()
        }
        self._heartbeat: Heartbeat | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        self._quitting = threading.Event()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        factory: sessionmaker[Session],
        *,
        vault: PersonalDataVault,
        lanes: bool = True,
    ) -> "Dispatcher":
        """The configured notifiers (an unknown or broken one stops start-up) and templates."""
        storage, shared = open_storage(settings.rate_limit_storage)
        return cls(
            factory,
            notifiers=build_notifiers(settings),
            renderer=Renderer(
                sender={"ko": settings.alert_sender_ko, "en": settings.alert_sender_en},
                max_segments=settings.sms_max_segments,
            ),
            vault=vault,
            public_base_url=settings.public_base_url,
            policy=Policy.from_settings(settings),
            lanes=lanes,
            rate_storage=storage,
            shared_rate=shared,
        )

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register this process and start its heartbeat (which renews the short leases of
        what it holds); done by the first drain. Needs a factory of its own connections."""
        with self._start_lock:
            if self._heartbeat is not None:
                return
            try:
                with self.factory.begin() as session:
                    for circuit in self.circuits.values():
                        circuit.ensure_row(session, now=utcnow())
            except SQLAlchemyError as exc:
                if not _database_down(exc):
                    raise
                log.warning("dispatcher start: database unavailable", exc_info=True)
            self._heartbeat = Heartbeat(
                self.factory,
                worker=self.worker,
                lease_s=self.policy.lease_s,
                holdings=self.holdings,
                rates=self.rates,
                clock=self.clock,
            )
            self._heartbeat.start()

    def run_until_idle(self, *, poll_s: float) -> Tally:
        """Drain, wait for retries and lapsed claims to come due, until no alert is open."""
        total = Tally()
        failures = 0
        while not self._quitting.is_set():
            try:
                total.merge(self.drain())
                with self.factory() as session:
                    if not outbox.open_count(session):
                        return total
                failures = 0
            except SQLAlchemyError as exc:
                if not _database_down(exc):
                    raise
                # As a worker does (cli._work): what it held lapses and goes again, later.
                failures += 1
                log.warning(
                    "dispatch failed: database unavailable; trying again",
                    extra={"error": type(exc).__name__, "failures": failures},
                )
            self._quitting.wait(min(poll_s * 2 ** min(failures, 6), max(poll_s, 10.0)))
        return total

    def quit(self) -> None:
        """Claim nothing more: the batches in hand are sent and recorded, then the drain
        returns (a worker stopping on SIGTERM; close() gives back whatever is still held)."""
        self._quitting.set()
        self.wake()

    def wake(self) -> None:
        """New alerts were committed: the running drain goes round once more."""
        for event in self._woken.values():
            event.set()

    def drain(self, *, max_s: float | None = None) -> Tally:
        """Send everything due now, batch after batch, until nothing is due (or max_s)."""
        if self.lanes:
            self.start()
        channels = list(self.notifiers)
        if self.lanes and len(channels) > 1:
            total = Tally()
            idle: set[str] = set()
            lock = threading.Lock()
            started = time.monotonic()
            # A lane that failed (the database away) ends the others' turn too: they would
            # otherwise wait for it to go idle, for ever, and the drain would never return.
            failed = threading.Event()
            # Set by the lane that saw every lane idle at once: the others end their turn
            # too, instead of claiming again after their wait. Before, the e-mail lane ended
            # while the SMS lane waited, the SMS lane then claimed a batch that a provider
            # held for minutes, and no e-mail went until it was done (a scaled-deployment
            # CI run: 8 e-mails pending for 90 s beside 4 held SMS).
            ended = threading.Event()

            def lane(channel: str) -> Tally:
                try:
                    return lane_until_idle(channel)
                except BaseException:
                    failed.set()
                    raise

            def lane_until_idle(channel: str) -> Tally:
                # A lane with nothing due keeps looking while another lane is busy: an SMS
                # retry that comes due must not wait for a stalled relay's batch to end.
                # A lane is in `idle` only while it waits, never while it claims or sends.
                mine = Tally()
                while True:
                    with lock:
                        if ended.is_set():
                            return mine
                        idle.discard(channel)
                    tally = self._drain([channel], max_s=max_s, failed=failed)
                    mine.merge(tally)
                    if self._quitting.is_set() or failed.is_set():
                        return mine
                    with lock:
                        if not tally.claimed:
                            idle.add(channel)
                        over = max_s is not None and time.monotonic() - started > max_s
                        if over or idle >= set(channels):
                            ended.set()
                            return mine
                    self._woken[channel].wait(_LANE_POLL_S)

            while True:
                with ThreadPoolExecutor(len(channels), thread_name_prefix="lane") as lanes:
                    for tally in lanes.map(lane, channels):
                        total.merge(tally)
                # A wake that came as the drain ended (after a lane's last look): every lane
                # goes round once more, as wake() promises. A review saw a level-4 SMS left
                # pending by a drain that had been woken 2 ms after its e-mail lane ended it.
                if self._quitting.is_set() or not any(e.is_set() for e in self._woken.values()):
                    break
                if max_s is not None and time.monotonic() - started > max_s:
                    break
                ended.clear()
                idle.clear()
        else:
            total = self._drain(channels, max_s=max_s)
        return total

    def _drain(
        self,
        channels: list[str],
        *,
        max_s: float | None,
        failed: threading.Event | None = None,
    ) -> Tally:
        started = time.monotonic()
        total = Tally()
        while True:
            for channel in channels:
                self._woken[channel].clear()
            tally = self.step(channels=channels)
            total.merge(tally)
            if self._quitting.is_set() or (failed is not None and failed.is_set()):
                break
            if max_s is not None and time.monotonic() - started > max_s:
                break
            if tally.claimed == 0 and not any(self._woken[c].is_set() for c in channels):
                break
        return total

    def step(self, *, now: datetime | None = None, channels: list[str] | None = None) -> Tally:
        """One batch per channel: claim, send, record."""
        tally = Tally()
        for channel in channels or list(self.notifiers):
            if self._quitting.is_set():
                break
            notifier = self.notifiers[channel]
            at = now or self.clock.now()
            # The claim's lease runs from `at`: so does this process's count of it, read before
            # the claim (a pause after the claim's commit must not look like a fresh lease).
            leased_from = time.monotonic()
            if self._paused_until.get(channel, at) > at:
                continue
            sender = self._senders[id(notifier)]
            if sender is not None and (sender.held_until() or 0.0) > time.time():
                continue  # the provider's queue for this sender is full: see pacing.py
            # A Retry-After holds the rest of its own batch; later batches follow _paused_until.
            self._throttled_until.pop(channel, None)
            limit = self.batch_limit(channel, notifier)
            with self.factory.begin() as session:
                outbox.bound_idle(session, lease_s=self.policy.lease_s)
                gate = self.circuits[channel].gate(session, now=at)
                rows = outbox.claim(
                    session,
                    channel=channel,
                    now=at,
                    limit=1 if gate.probe else limit,
                    lease_s=self.policy.lease_s,
                    worker=self.worker,
                    urgent_only=not gate.send,
                )
            self.holdings.add(rows, until=leased_from + self.policy.lease_s)
            if not rows:
                continue
            tally.claimed += len(rows)
            try:
                if gate.send:
                    self._handle(rows, channel, notifier, now=now, tally=tally)
                else:
                    self._divert(rows, channel, gate, now=at, tally=tally)
            except BaseException:
                # Claimed, then the batch failed (the database away before its sends, a bug):
                # what is not recorded must not stay held, renewed by the heartbeat for as long
                # as this process lives. Its lease lapses and a later claim sends it.
                self.holdings.drop(row.id for row in rows)
                raise
        return tally

    def _divert(
        self, rows: list[Claimed], channel: str, gate: Gate, *, now: datetime, tally: Tally
    ) -> None:
        """The channel's circuit is open: its urgent alerts (the only rows claimed) wait for it,
        and go now on the citizen's other channel where they have one."""
        other = OTHER_CHANNEL[channel]
        with self.factory() as session:
            people = recipients(
                session, {r.citizen_id for r in rows}, channel=channel, vault=self.vault
            )
        until = gate.until or now
        divert = {
            row.id
            for row in rows
            if other in self.notifiers
            and (person := people.get(row.citizen_id)) is not None
            and not person.erased
            and other in person.reachable
        }
        reason = f"{self.notifiers[channel].name} circuit open until {until:%H:%M:%S}Z"
        decided = [
            (
                row,
                Decision(
                    row.id,
                    RETRY_WAIT,
                    code=HELD,
                    reason=reason + (f"; sent by {other} meanwhile" if row.id in divert else ""),
                    due_at=until,
                    outcome_unknown=row.outcome_unknown,
                    refund=True,
                ),
            )
            for row in rows
        ]
        self._record(decided, now=now, tally=tally, divert=divert)

    # -- one batch --------------------------------------------------------------------------

    def batch_limit(self, channel: str, notifier: Notifier) -> int:
        """How many rows to claim: no more than half a lease of sends (sent well inside the
        lease even when no heartbeat renews it) and no more than _CLAIM_AHEAD_S, at the
        sender's rate (in segments, shared by the dispatchers alive) and at the pace sends
        take: an urgent alert committed meanwhile waits for the batch in hand. Sized by the
        rate alone, a provider answering in 0.5 s made a batch of 500 take 37 s, and a probe's
        level 4 waited behind 508 level-1 SMS."""
        limit = self.policy.batch
        ahead_s = min(self.policy.lease_s / 2, _CLAIM_AHEAD_S)
        if notifier.max_per_second:
            per_s = notifier.max_per_second / self._live() / self._segments.get(channel, 1.0)
            limit = min(limit, max(1, int(per_s * ahead_s)))
        send_s = self._send_s.get(channel)
        if send_s:
            threads = self.policy.threads
            limit = min(limit, max(threads, int(threads * ahead_s / send_s)))
        return limit

    def sends_in(self, window_s: float, channel: str, notifier: Notifier) -> int:
        """How many sends one thread begins in `window_s`, at least one: at the pace sends
        take, and at the sender's rate shared by the threads of every dispatcher alive."""
        fits = float(_CHUNK)
        send_s = self._send_s.get(channel)
        if send_s:
            fits = min(fits, window_s / send_s)
        if notifier.max_per_second:
            per_thread = notifier.max_per_second / self._live() / self.policy.threads
            fits = min(fits, window_s * per_thread / self._segments.get(channel, 1.0))
        return max(1, int(fits))

    def observed_send(self, channel: str, seconds: float) -> None:
        """One send's time, averaged (a moving average: the provider's pace now)."""
        before = self._send_s.get(channel)
        self._send_s[channel] = seconds if before is None else 0.8 * before + 0.2 * seconds

    def _handle(
        self,
        rows: list[Claimed],
        channel: str,
        notifier: Notifier,
        *,
        now: datetime | None,
        tally: Tally,
    ) -> None:
        at = now or self.clock.now()
        with self.factory() as session:
            states = advisory_states(session, {r.advisory_id for r in rows})
            contents = self._contents.load(session, {(r.advisory_id, r.revision) for r in rows})
            people = recipients(
                session,
                {r.citizen_id for r in rows},
                channel=channel,
                vault=self.vault,
                now=at,
            )
            routine = self._routine_sent(session, rows, contents, at)
            behind = notices.warnings_behind(
                session, [r for r in rows if _all_clear(contents.get((r.advisory_id, r.revision)))]
            )

        def verdict_of(row: Claimed, settled: dict[int, notices.Outcome]) -> Decision | None:
            state = states.get(row.advisory_id)
            content = contents.get((row.advisory_id, row.revision))
            person = people.get(row.citizen_id)
            verdict = (
                _triage(row, state, content, person, now=at)
                or (
                    _after_the_warning(
                        row,
                        behind.of(row, settled, now=at, settle_s=self._settle_s),
                        now=at,
                        wait_s=self.policy.lease_s,
                    )
                    if _all_clear(content)
                    else None
                )
                or _quiet(row, state, content, person, now=at)
                or self._cap(row, content, routine, now=at)
            )
            if verdict is not None and row.outcome_unknown and not verdict.outcome_unknown:
                # Whatever ends it, a row whose last try may have gone says so: the all-clear
                # goes to it, and one queued again is looked up first (a review: one failed as
                # unreadable lost the mark, and a requeue sent it twice).
                verdict = dataclasses.replace(verdict, outcome_unknown=True)
            return verdict

        def unprepared(row: Claimed) -> Decision:
            # A bug in one row's verdict or message (a template, a zone, a token) fails that
            # row alone, saying so: raised, it failed the whole batch, which lapsed and was
            # claimed again, row and all, for ever; a review saw five level-4 SMS held so.
            log.exception("alert could not be prepared", extra={"alert": row.id})
            return Decision(
                row.id,
                FAILED,
                code=CODE_UNPREPARED,
                reason="the message could not be prepared (a fault here, in the log)",
                outcome_unknown=row.outcome_unknown,
            )

        # The warnings first: an all-clear behind one this batch ends unsent learns it here.
        verdicts: dict[int, Decision | None] = {}
        for row in rows:
            if not _all_clear(contents.get((row.advisory_id, row.revision))):
                try:
                    verdicts[row.id] = verdict_of(row, {})
                except Exception:
                    verdicts[row.id] = unprepared(row)
        settled = {
            row_id: (verdict.status, verdict.outcome_unknown, verdict.due_at)
            for row_id, verdict in verdicts.items()
            if verdict is not None
        }

        def prepared(row: Claimed, person: Recipient | None) -> Decision | _Job:
            """Why the row is not sent (a Decision), or its message to send."""
            state = states.get(row.advisory_id)
            content = contents.get((row.advisory_id, row.revision))
            verdict = verdicts[row.id] if row.id in verdicts else verdict_of(row, settled)
            if verdict is not None:
                return verdict
            assert content is not None and person is not None and state is not None
            address = person.address
            assert address is not None
            reference = alert_reference = self.links.reference(row.id)
            link = self.links.details(reference)
            rendered, checkin_token = self._render(row, content, person, state, link=link, now=at)
            if checkin_token and row.channel == "sms":
                # The SMS carries the check-in link instead of the details one: the token is
                # what a look-up of an unknown outcome finds it by.
                reference = checkin_token
            message = OutgoingMessage(
                alert_id=row.id,
                channel=row.channel,
                to=address,
                text=rendered.text,
                subject=rendered.subject,
                html=rendered.html,
                segments=rendered.segments,
                reference=reference,
                earlier_references=tuple(
                    self.links.earlier_checkin_tokens(reference)
                    if reference == checkin_token
                    else ()
                ),
                idempotency_key=alert_reference,
                valid_until=state.expires if content.kind != "cancel" else None,
                status_callback=self.links.status_callback(
                    notifier.name, alert_id=row.id, attempt=row.attempt
                ),
            )
            expires = state.expires if content.kind != "cancel" else None
            phone_hash = person.phone_hash if row.channel == "sms" else None
            return _Job(row, message, expires, phone_hash, at)

        decided: list[tuple[Claimed, Decision]] = []
        jobs: list[_Job] = []
        for row in rows:
            person = people.get(row.citizen_id)
            if person is not None and OTHER_CHANNEL[row.channel] in person.reachable:
                self._can_fall_back.add(row.id)
            try:
                job = prepared(row, person)
            except Exception:
                decided.append((row, unprepared(row)))
                continue
            if isinstance(job, Decision):
                decided.append((row, job))
            else:
                jobs.append(job)
        if decided:
            self._record(decided, now=at, tally=tally)
        if jobs:
            mean = sum(job.message.segments or 1 for job in jobs) / len(jobs)
            self._segments[channel] = (self._segments.get(channel, mean) + mean) / 2
            self._send_all(jobs, self._pools[channel], notifier, now=now, tally=tally)

    def _render(
        self,
        row: Claimed,
        content: AlertContent,
        person: Recipient,
        state: AdvisoryState,
        *,
        link: str,
        now: datetime,
    ) -> tuple[Rendered, str]:
        """The message for this row, and its check-in token when it asks "are you safe?"."""
        asks = row.checkin_round > 0 or (content.asks_checkin and row.told_ahead == Ahead.NO)
        token = (
            self.links.checkin_token(
                citizen_id=row.citizen_id, advisory_id=row.advisory_id, asked_at=row.created_at
            )
            if asks
            else ""
        )
        checkin = self.links.checkin(token) if token else ""
        language = person.language
        if row.checkin_round > 0:
            if row.channel == "sms":
                return self.renderer.checkin_sms(content, language=language, link=checkin), token
            return (
                self.renderer.checkin_email(content, language=language, link=link, checkin=checkin),
                token,
            )
        part_of = _part_of(content, person, state, now)
        if row.channel == "sms":
            return (
                self.renderer.sms(
                    content,
                    language=language,
                    link=checkin or link,
                    part_of=part_of,
                    ask=asks,
                ),
                token,
            )
        return (
            self.renderer.email(
                content, language=language, link=link, part_of=part_of, checkin=checkin
            ),
            token,
        )

    def _send_all(
        self,
        jobs: list[_Job],
        pool: ThreadPoolExecutor,
        notifier: Notifier,
        *,
        now: datetime | None,
        tally: Tally,
    ) -> None:
        sender = self._senders[id(notifier)]
        # A few sends per task: one future per message costs more than a no-op send.
        size = max(1, min(_CHUNK, len(jobs) // (self.policy.threads * 4)))
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures: dict[Future[list[tuple[Outcome, bool]]], list[_Job]] = {
            pool.submit(self._deliver_all, notifier, sender, chunk): chunk for chunk in chunks
        }
        pending: list[tuple[Claimed, Decision]] = []
        last_record = time.monotonic()
        for future in as_completed(futures):
            chunk = futures[future]
            at = now or self.clock.now()
            for job, (outcome, reconciled) in zip(chunk, future.result(), strict=True):
                tally.reconciled += reconciled
                pending.append((job.row, self._decide(job, outcome, now=at)))
            due = len(pending) >= _RECORD_EVERY or time.monotonic() - last_record > _RECORD_AFTER_S
            if pending and due:
                self._record(pending, now=at, tally=tally)
                pending, last_record = [], time.monotonic()
        if pending:
            self._record(pending, now=now or self.clock.now(), tally=tally)

    def _deliver_all(
        self, notifier: Notifier, sender: SenderRate | None, chunk: list[_Job]
    ) -> list[tuple[Outcome, bool]]:
        results = []
        marks = _SendMarks(self, notifier, chunk) if notifier.settle_s else None
        for job in chunk:
            try:
                results.append(self._deliver(notifier, sender, job, marks))
            except Exception as exc:  # a notifier bug: keep the row, look before resending
                log.exception("notifier raised", extra={"notifier": notifier.name})
                results.append(
                    (Retry(reason=f"notifier error: {exc!r}", outcome_unknown=True), False)
                )
        return results

    def _deliver(
        self,
        notifier: Notifier,
        sender: SenderRate | None,
        job: _Job,
        marks: "_SendMarks | None",
    ) -> tuple[Outcome, bool]:
        """Runs on a pool thread: reconcile first if an earlier try may have gone out."""
        circuit = self.circuits[job.row.channel]
        if circuit.tripped():
            return Retry(reason="held: the provider is failing", code=HELD), False
        unconfirmable = False
        if job.row.outcome_unknown:
            found = notifier.lookup(job.message, since=job.row.created_at)
            unconfirmable = not found.supported
            if found.found is not None:
                circuit.observe(found.found)
                return found.found, True
            if found.error:
                # A try, so that backing off grows and the row ends (then failed, still
                # marked unknown: the all-clear goes to it, a staff retry looks it up first).
                reason = f"could not look up an earlier try ({found.error})"
                outcome: Outcome = Retry(reason=reason, code=LOOKUP_FAILED, outcome_unknown=True)
                circuit.observe(outcome)
                return outcome, False
        if self._ended_meanwhile(job):
            return _not_sent(job.row), False
        if sender is not None and not sender.wait(job.message.segments or 1):
            reason = "held: no send slot of the sender's rate came free"
            return Retry(reason=reason, code=THROTTLED, retry_after_s=1.0), False
        wait_s = self._throttled_until.get(job.row.channel, 0.0) - time.monotonic()
        if wait_s > 0:
            reason = "held: the provider asked us to wait"
            return Retry(reason=reason, code=THROTTLED, retry_after_s=wait_s), False
        if self._ended_meanwhile(job):  # again: the sender's rate may have waited seconds
            return _not_sent(job.row), False
        # Checked last before the send: a process paused past its lease, or cut off from the
        # database for as long, must not send what another dispatcher may now hold. A notifier
        # that can checks again as its first byte leaves (send_window.py).
        margin_s = self.policy.send_margin_s
        if not self.holdings.may_send(job.row, margin_s=margin_s):
            # A process starved of CPU or of its database past a quarter of its lease, or a
            # claim the heartbeat found overtaken (the advisory cancelled). Said at once.
            log.warning(
                "send skipped: the claim was not surely ours",
                extra={"notifier": notifier.name, "alert_id": job.row.id},
            )
            return _not_sent(job.row), False
        if marks is not None and (wait_s := marks.cover(job)) is not None:
            return _not_sent(job.row, retry_after_s=wait_s), False
        lease_window = partial(self.holdings.send_window_end, job.row, margin_s=margin_s)
        window = lease_window if marks is None else lambda: min(lease_window(), marks.until)
        started = time.perf_counter()
        try:
            with send_window(window):
                outcome = notifier.send(job.message)
        except SendWindowClosed as closed:
            log.warning(
                "send not started: the claim's lease ran out first",
                extra={"notifier": notifier.name, "alert_id": job.row.id, "why": str(closed)},
            )
            return _not_sent(job.row), False
        took = time.perf_counter() - started
        metrics.SEND_SECONDS.labels(notifier.name).observe(took)
        self.observed_send(job.row.channel, took)
        if isinstance(outcome, Retry) and (outcome.retry_after_s or 0) > _RETRY_AFTER_MOST_S:
            # A provider's Retry-After pauses the whole channel, a level 4 too: an hour's (a
            # provider's fault, a hostile relay's) must not hold a warning for an hour.
            log.warning(
                "Retry-After cut",
                extra={"notifier": notifier.name, "asked_s": outcome.retry_after_s},
            )
            outcome = dataclasses.replace(outcome, retry_after_s=_RETRY_AFTER_MOST_S)
        circuit.observe(outcome)
        if isinstance(outcome, Retry) and outcome.queue_full:
            outcome = self._backpressure(job.row.channel, notifier, outcome)
        elif isinstance(outcome, Retry) and outcome.retry_after_s:
            if sender is not None:
                sender.pause(outcome.retry_after_s)
            self._throttled_until[job.row.channel] = time.monotonic() + outcome.retry_after_s
        if unconfirmable and isinstance(outcome, Retry) and outcome.outcome_unknown:
            # The one resend of a message whose first outcome nobody can learn (SMTP) went the
            # same way: the relay may hold both copies. No third: it counts as sent.
            log.warning(
                "outcome unknown twice: counted as sent",
                extra={"notifier": notifier.name, "alert_id": job.row.id},
            )
            return Sent(), False
        return outcome, False

    def _backpressure(self, channel: str, notifier: Notifier, outcome: Retry) -> Retry:
        """The provider's queue for this sender is full (nothing was sent): every process holds
        the sender, and the rest of this batch waits for a later one."""
        until = self.hold_sender(channel)
        wait_s = max(1.0, (until - self.clock.now()).total_seconds())
        self._throttled_until[channel] = time.monotonic() + wait_s
        return Retry(
            reason=outcome.reason, code=outcome.code, retry_after_s=wait_s, queue_full=True
        )

    def hold_sender(self, channel: str) -> datetime:
        """Hold the sender of `channel` (its provider's queue is full); returns when it ends,
        on the database's clock, as claims and _paused_until read it (on this machine's, a
        machine 20 s ahead of the database held every SMS, level 4 too, 20 s longer)."""
        sender = self._senders[id(self.notifiers[channel])]
        hold_s = self.policy.hold_s if sender is None else sender.hold() - time.time()
        until = self.clock.now() + timedelta(seconds=max(0.0, hold_s))
        # This process holds the channel even when the storage is its own (memory://).
        self._paused_until[channel] = max(until, self._paused_until.get(channel, until))
        return until

    def _live(self) -> int:
        """Dispatchers alive, as this one's heartbeat last counted them."""
        return self._heartbeat.live if self._heartbeat is not None else 1

    def _ended_meanwhile(self, job: _Job) -> bool:
        """Its advisory ended while the batch waited its turn (a slow provider, the sender's
        rate): not sent, and the next claim ends it as expired. A probe's warnings went out
        up to 26 s after their advisory's end."""
        return job.expires is not None and self.clock.now() >= job.expires

    def _routine_sent(
        self, session: Session, rows: list[Claimed], contents: dict, at: datetime
    ) -> "_Routine":
        """Routine alerts each citizen of the batch was sent in the last hour: those of level 1-2
        advisories, their roll calls' asks included; not level 3-4 alerts, their asks or
        all-clears, which the cap never holds (a level 3 and its roll call once held a
        citizen's next level 2 as their hour's fifth)."""
        routine = _Routine()
        if not self.policy.routine_per_hour:
            return routine
        citizens = {
            r.citizen_id for r in rows if _routine(contents.get((r.advisory_id, r.revision)))
        }
        sent = outbox.sent_since(session, citizen_ids=citizens, since=at - timedelta(hours=1))
        kinds = self._contents.load(session, {(a, r) for _, a, r in sent})
        for (citizen_id, advisory_id, revision), count in sent.items():
            if _routine(kinds.get((advisory_id, revision))):
                routine.count(citizen_id, advisory_id, revision, count)
        return routine

    def _cap(
        self, row: Claimed, content: AlertContent | None, routine: "_Routine", *, now: datetime
    ) -> Decision | None:
        """Hold a routine alert (a roll call's ask of a level 1-2 advisory too: a probe's consul
        texted one citizen six in 8 s with six level-1 advisories and their roll calls) for a
        citizen who had their hour's share; count it otherwise. Not a newer revision of an
        advisory they had this hour: it replaces the words they hold (a probe's citizens kept
        the fifth revision's words for an hour while the seventh, the correction, was held)."""
        if not self.policy.routine_per_hour or not _routine(content):
            return None
        if row.checkin_round and row.priority == priority.CHECK_IN:
            return None  # an ask that goes first (CAP Extreme at level 2, a level 3 lowered)
        if (
            not routine.replaced(row)
            and routine.sent.get(row.citizen_id, 0) >= self.policy.routine_per_hour
        ):
            return Decision(
                row.id,
                RETRY_WAIT,
                code="citizen-cap",
                reason=f"held: {self.policy.routine_per_hour} routine alerts in the last hour",
                due_at=now + _CAP_WAIT,
                # A hold is not a try: it neither spends the retry budget nor forgets that an
                # earlier try may have gone out (that one is still looked up before a send).
                outcome_unknown=row.outcome_unknown,
                refund=True,
            )
        routine.count(row.citizen_id, row.advisory_id, row.revision, 1)
        return None

    def _decide(self, job: _Job, outcome: Outcome, *, now: datetime) -> Decision:
        row = job.row
        not_tried = (HELD, THROTTLED, SEND_SKIPPED)
        if isinstance(outcome, Retry) and (outcome.code in not_tried or outcome.queue_full):
            # Not a try: the channel's circuit opened, the provider asked us to wait, its queue
            # for the sender was full, or the claim stopped being surely ours, while this batch
            # was in hand.
            if outcome.code == HELD:
                due = self.circuits[row.channel].held_until(now)
            elif outcome.code == SEND_SKIPPED:
                due = now + timedelta(seconds=outcome.retry_after_s or 0.0)
            else:
                due = now + timedelta(seconds=outcome.retry_after_s or 1.0)
            return Decision(
                row.id,
                RETRY_WAIT,
                code=outcome.code,
                reason=outcome.reason,
                due_at=due,
                outcome_unknown=row.outcome_unknown,
                refund=True,
            )
        if isinstance(outcome, Sent):
            return Decision(
                row.id, SENT, provider_ref=outcome.provider_ref, segments=job.message.segments
            )
        if isinstance(outcome, Failed):
            stopped = job.phone_hash if outcome.opted_out else None
            return Decision(
                row.id,
                FAILED,
                code=outcome.code,
                reason=outcome.reason,
                opted_out_hash=stopped,
                opted_out_since=job.started if stopped else None,
            )
        assert isinstance(outcome, Retry)
        # Ending unsent, a row whose last try may have gone out says so: the all-clear goes to
        # it, and a retry by staff looks it up before sending again.
        if row.attempts >= self.policy.max_attempts:
            reason = f"gave up after {row.attempts} attempts: {outcome.reason}"
            return Decision(
                row.id,
                FAILED,
                code=outcome.code or "retries",
                reason=reason,
                outcome_unknown=outcome.outcome_unknown,
            )
        delay = self.policy.backoff_s(row.attempts)
        if outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s)
            self._paused_until[row.channel] = now + timedelta(seconds=outcome.retry_after_s)
        due = now + timedelta(seconds=delay)
        if outcome.outcome_unknown and outcome.code != LOOKUP_FAILED:
            # Looked up sooner, a send the provider makes late (after our timeout) would be
            # missed and made again: a duplicate SMS (seen in CI when a loaded fake was slow).
            # Not past the advisory's end, though: a warning possibly sent twice is better
            # than one expired unsent, which no e-mail follows.
            settled = now + timedelta(seconds=self.notifiers[row.channel].settle_s)
            if job.expires is not None:
                settled = min(settled, job.expires - _BEFORE_THE_END)
            due = max(due, settled)
        if job.expires is not None and due >= job.expires:
            return Decision(
                row.id,
                EXPIRED,
                code=outcome.code,
                reason=f"advisory ends before the retry: {outcome.reason}",
                outcome_unknown=outcome.outcome_unknown,
            )
        return Decision(
            row.id,
            RETRY_WAIT,
            code=outcome.code,
            reason=outcome.reason,
            due_at=due,
            outcome_unknown=outcome.outcome_unknown,
        )

    def _record(
        self,
        decided: list[tuple[Claimed, Decision]],
        *,
        now: datetime,
        tally: Tally,
        divert: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        """Write a stretch of outcomes (and the fallbacks they call for) in one transaction,
        and what they showed of the provider (its circuit). With the database away, try again
        until it is back: the sends happened, and only this process knows."""
        channel = decided[0][0].channel
        try:
            fallbacks = self._write_patiently(decided, channel=channel, now=now, divert=divert)
        except SQLAlchemyError as exc:
            if _database_down(exc):
                raise
            # Refused for what it says (a value the column cannot hold, a bug): given up, the
            # rows would lapse and go again, and an e-mail cannot be looked up. A review saw
            # one sent every lease without end. Each outcome alone, then bare if it still is.
            log.exception(
                "record refused; writing each outcome alone", extra={"alerts": len(decided)}
            )
            fallbacks = sum(
                self._write_alone(pair, channel=channel, now=now, divert=divert) for pair in decided
            )
        self.holdings.drop(row.id for row, _ in decided)
        self.rates.add(channel, sum(1 for _, d in decided if d.status == SENT))
        for row, decision in decided:
            self._can_fall_back.discard(row.id)
            tally.add(decision)
        if fallbacks:
            tally.fallbacks += fallbacks
            self.wake()

    def _write_patiently(
        self,
        decided: list[tuple[Claimed, Decision]],
        *,
        channel: str,
        now: datetime,
        divert: set[int] | frozenset[int],
    ) -> int:
        """_write, tried again while the database is away: the sends happened, and only this
        process knows."""
        delay = 0.2
        deadline = time.monotonic() + _RECORD_PATIENCE_S
        while True:
            try:
                return self._write(decided, channel=channel, now=now, divert=divert)
            except SQLAlchemyError as exc:
                if not _database_down(exc):
                    raise
                if self._stopping.is_set() or time.monotonic() > deadline:
                    raise
                log.warning(
                    "record failed: database unavailable; retrying",
                    extra={"alerts": len(decided), "error": type(exc).__name__},
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _write_alone(
        self,
        pair: tuple[Claimed, Decision],
        *,
        channel: str,
        now: datetime,
        divert: set[int] | frozenset[int],
    ) -> int:
        """One outcome of a stretch whose record was refused; if it is refused itself, its
        status and timing alone, with what the provider said left out of the ledger."""
        row, decision = pair
        try:
            return self._write_patiently([pair], channel=channel, now=now, divert=divert)
        except SQLAlchemyError as exc:
            if _database_down(exc):
                raise
            log.exception("outcome refused; recorded without its details", extra={"alert": row.id})
        bare = dataclasses.replace(
            decision,
            provider_ref=None,
            code=None,
            reason="what the provider said could not be recorded (see the dispatcher's log)",
            opted_out_hash=None,
        )
        return self._write_patiently([(row, bare)], channel=channel, now=now, divert=divert)

    def _write(
        self,
        decided: list[tuple[Claimed, Decision]],
        *,
        channel: str,
        now: datetime,
        divert: set[int] | frozenset[int],
    ) -> int:
        fallbacks = 0
        with self.factory.begin() as session:
            outbox.bound_idle(session, lease_s=self.policy.lease_s)
            # Nothing of the batch's own rows is held until the end: an erasure locks the
            # record, then its other alerts (cancelled), then those whose provider texts it
            # scrubs, which may be this batch's. A review found two waits on an erasure while
            # holding those rows, each a deadlock (PostgreSQL aborted this write, which tried
            # again): a STOP's write to the record, and a fallback's insert meeting the
            # e-mail row the erasure was cancelling.
            # A STOP the provider heard and we did not: kept as if it reached our webhook, so
            # staff see it, the check-in asks on e-mail, and nothing more is texted until START.
            stops = {(d.opted_out_hash, d.opted_out_since) for _, d in decided if d.opted_out_hash}
            for phone_hash, since in sorted(stops):
                hear_opt_out(
                    session, phone_hash=phone_hash, stop=True, now=now, refused_since=since
                )
            for row, decision in decided:
                if (decision.status == FAILED and self._falls_back(row)) or row.id in divert:
                    fallbacks += outbox.enqueue_fallback(
                        session, failed=row, channel=OTHER_CHANNEL[row.channel], now=now
                    )
            outbox.record(session, decided=decided, worker=self.worker, now=now)
            state = self.circuits[channel].settle(session, now=now)
        if state is not None:
            log.warning(
                "circuit " + state,
                extra={"notifier": self.notifiers[channel].name, "channel": channel},
            )
        return fallbacks

    def _falls_back(self, row: Claimed) -> bool:
        """The citizen has a contact on the other channel, and it has a notifier."""
        return row.id in self._can_fall_back and OTHER_CHANNEL[row.channel] in self.notifiers

    def close(self) -> None:
        self._stopping.set()
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for notifier in {id(n): n for n in self.notifiers.values()}.values():
            notifier.close()


_CAP_WAIT = timedelta(minutes=15)


def _routine(content: AlertContent | None) -> bool:
    """Held by the hourly cap: level 1-2, not an all-clear, not what goes at once (a CAP
    Extreme at level 2 asks "are you safe?"; one of urgency Immediate ignores quiet hours)."""
    return (
        content is not None
        and content.kind != "cancel"
        and not is_urgent(content.level)
        and not content.goes_at_once
    )


def _part_of(content: AlertContent, person: Recipient, state: AdvisoryState, now: datetime) -> str:
    """The country whose part the area covers, for a citizen reached only by that country: not
    for one the advisory reaches by their own place too (in Tokyo, and also registered for a
    trip to "Japan"), in its area and its window as matching decides."""
    partly = set(content.area.get("country_only") or ()) & person.known_only_by
    if not partly:
        return ""
    if person.points:
        target = Target.for_window(
            0, content.shapes, effective=state.effective, expires=state.expires, now=now
        )
        # A current location counts by the area alone: before the advisory is in effect,
        # someone there was still not reached "only by the country".
        target = replace(target, active_now=True)
        if reaches_a_place(target, person.points, today=Today.at(now)):
            return ""
    return min(partly)


def _all_clear(content: AlertContent | None) -> bool:
    return content is not None and content.kind == "cancel"


def _after_the_warning(
    row: Claimed, behind: notices.Behind, *, now: datetime, wait_s: float
) -> Decision | None:
    """An all-clear goes after the warning it follows, and only if one may have gone: it was
    queued for a warning then held by a dispatcher, which may have given it up (finding the
    advisory cancelled), and "lifted" would then tell someone of a warning they never had."""
    if behind.found == notices.NEVER_WARNED:
        return Decision(row.id, CANCELLED, reason=notices.REASON_NEVER_WARNED)
    if behind.found == notices.IN_FLIGHT:
        # Until the warning comes due (its claim's lease end, its retry's time: a warning
        # held for quiet hours till morning is not asked about every few seconds), a second
        # after; not a try: the claim's attempt is given back.
        due = (behind.until or now + timedelta(seconds=wait_s)) + timedelta(seconds=1)
        return Decision(
            row.id,
            RETRY_WAIT,
            reason="waits for the warning still on its way",
            due_at=max(due, now + timedelta(seconds=1)),
            outcome_unknown=row.outcome_unknown,
            refund=True,
        )
    return None


def _quiet(
    row: Claimed,
    state: AdvisoryState | None,
    content: AlertContent | None,
    person: Recipient | None,
    *,
    now: datetime,
) -> Decision | None:
    """Hold a level 1-2 alert (or its all-clear) while it is night where the citizen is."""
    if content is None or content.goes_at_once or row.checkin_round:
        return None
    if person is None or person.quiet is None or person.place is None:
        return None
    zone = zone_of(person.place)
    if zone is None:
        return None  # no clock to read: better a message at night than none
    quiet = quiet_until(now, start=person.quiet[0], end=person.quiet[1], zone=zone)
    if quiet is None:
        return None
    reason = f"quiet hours until {quiet.local_end} {quiet.zone}"
    expires = state.expires if state is not None and content.kind != "cancel" else None
    if expires is not None and expires <= quiet.until:
        return Decision(row.id, EXPIRED, reason=f"advisory ends during the {reason}")
    # Not a try: the claim's attempt is given back, and an unknown outcome stays unknown.
    return Decision(
        row.id,
        RETRY_WAIT,
        code=outbox.QUIET_HOURS,
        reason=reason,
        due_at=quiet.until,
        outcome_unknown=row.outcome_unknown,
        refund=True,
    )


# error_code of a row whose send this process skipped, sure that nothing left: the claim was
# overtaken (the advisory revised or cancelled, the citizen erased) or its lease ran short.
SEND_SKIPPED = "send-skipped"
# A send whose mark failed or came too late (the database away, or its locks held by others)
# is claimed again after this, not at once: each try costs two writes (a review).
_MARK_BACKOFF_S = 1.0


class _SendMarks:
    """The ledger's word, written ahead of a pool task's sends, that they may be under way
    (outbox.mark_sending): a send begins only inside the window of a mark that names it, so
    whoever takes its row back after this process died looks it up once it has settled. A
    mark names only the sends that can begin in its window at the pace sends go: the others
    of a dead process's task are taken back at once."""

    def __init__(self, dispatcher: "Dispatcher", notifier: Notifier, chunk: list[_Job]) -> None:
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.chunk = chunk
        self.index = {job.row.id: i for i, job in enumerate(chunk)}
        self.held: set[int] = set()
        self.until = 0.0  # time.monotonic(): the sends the last mark covers begin before
        self.warned = False
        # time.monotonic(): a mark failed or came too late; until then the task's other sends
        # are refused at once (each would wait its own half window for the same locks).
        self.refused_until = 0.0

    def cover(self, job: _Job) -> float | None:
        """None when the send of `job` may begin now, marking it and the next few if the last
        mark does not cover it (or its window has passed); otherwise the seconds its row waits
        before it is claimed again: none when its claim was overtaken (whoever holds it now
        decides), a moment when the ledger could not be written in time."""
        now = time.monotonic()
        if job.row.id in self.held and now < self.until:
            return None
        if now < self.refused_until:
            return _MARK_BACKOFF_S
        d = self.dispatcher
        window_s = d.policy.send_margin_s
        rest = self.chunk[self.index[job.row.id] :]
        rest = rest[: d.sends_in(window_s, job.row.channel, self.notifier)]
        try:
            with d.factory.begin() as session:
                # Half the window at most for each of others' locks: a mark that waited out
                # its window covers nothing (SQLite's 10 s for the write lock, behind a
                # fan-out's write, held every send of a 2.5 s window and cost two writes
                # each; a review).
                wait_at_most(session, seconds=window_s / 2)
                outbox.bound_idle(session, lease_s=d.policy.lease_s)
                settles_at = d.clock.now() + timedelta(seconds=window_s + self.notifier.settle_s)
                self.held = outbox.mark_sending(
                    session,
                    held={later.row.id: later.row.attempt for later in rest},
                    worker=d.worker,
                    settles_at=settles_at,
                )
        except Exception:
            # Unmarked, a send cut short by a crash could be made twice: it waits instead.
            if not self.warned:  # once a task: the database away fails every mark
                log.warning(
                    "send not started: the ledger could not mark it",
                    extra={"notifier": self.notifier.name},
                    exc_info=True,
                )
                self.warned = True
            self.held, self.until = set(), 0.0
            self.refused_until = time.monotonic() + _MARK_BACKOFF_S
            return _MARK_BACKOFF_S
        self.until = now + window_s
        if job.row.id not in self.held:
            return 0.0
        if time.monotonic() >= self.until:  # the mark waited out its own window
            self.refused_until = time.monotonic() + _MARK_BACKOFF_S
            return _MARK_BACKOFF_S
        return None


def _not_sent(row: Claimed, *, retry_after_s: float | None = None) -> Retry:
    """A send skipped before its first byte: recorded at once as not tried (the record is
    fenced by the claim's attempt, so a claim that replaced this one stands). Left to lapse,
    the row came back marked as perhaps sent, and a citizen whose warning never left got the
    all-clear (a review)."""
    return Retry(
        reason="not sent: the claim was overtaken, its lease ran short or the ledger could "
        "not mark it in time",
        code=SEND_SKIPPED,
        outcome_unknown=row.outcome_unknown,
        retry_after_s=retry_after_s,
    )


def _ended(row: Claimed, status: str, reason: str) -> Decision:
    """Ended unsent by the advisory. A row whose last try's outcome was lost may have gone
    out: it keeps the mark (staff count it, a retry looks it up) and says so."""
    if row.outcome_unknown:
        return Decision(row.id, status, reason=f"{reason} ({MAYBE_SENT})", outcome_unknown=True)
    return Decision(row.id, status, reason=reason)


def _triage(
    row: Claimed,
    state: AdvisoryState | None,
    content: AlertContent | None,
    person: Recipient | None,
    *,
    now: datetime,
) -> Decision | None:
    """Why a claimed row must not be sent (a Decision), or None to send it."""
    if person is None or person.erased:
        return Decision(row.id, CANCELLED, reason=REASON_CITIZEN_ERASED)
    if state is None or content is None:
        return Decision(row.id, FAILED, code="no-advisory", reason="advisory not found")
    if person.unreadable:
        return Decision(
            row.id,
            FAILED,
            code=CODE_UNREADABLE,
            reason=f"its {row.channel} contact is sealed under a data secret not listed here",
        )
    if person.address is None:
        return Decision(row.id, FAILED, code="no-contact", reason=f"no {row.channel} contact")
    if row.channel == "sms" and person.sms_opted_out:
        # Carriers block our texts to the number after STOP; the e-mail (fallback) still goes.
        return Decision(row.id, FAILED, code="opted-out", reason="the citizen replied STOP")
    if content.kind == "cancel" and row.checkin_round > 0:
        return _ended(row, EXPIRED, REASON_CANCELLED_BEFORE_SENDING)
    if content.kind == "cancel":
        return None  # the all-clear goes out whatever the advisory's state
    if state.status == "cancelled":
        return _ended(row, EXPIRED, REASON_CANCELLED_BEFORE_SENDING)
    if row.revision < state.revision:
        return _ended(row, SUPERSEDED, f"revision {state.revision} replaced it before sending")
    if state.status == "expired" or (state.expires is not None and state.expires <= now):
        return _ended(row, EXPIRED, REASON_ENDED_BEFORE_SENDING)
    if state.status != "active":
        # Rejected, a draft, or waiting for approval (a decision raced the queue): only an
        # approved, active advisory is ever sent.
        return Decision(row.id, CANCELLED, reason=f"advisory is {state.status}")
    if not state.alerts_citizens:
        return Decision(row.id, CANCELLED, reason=REASON_ALERTS_NOBODY)
    return None
