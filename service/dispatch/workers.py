"""Dispatcher processes and their heartbeat. Claims are short leases (ANJEON_DISPATCH_LEASE_S,
10 s) that a heartbeat thread renews while the sends are in flight, so the alerts a dead
dispatcher held are due again within one lease, not minutes later. A dispatcher restarted on
the same host does better: it sees that an earlier process there is gone (its PID is free, or
names another process) and puts that one's alerts back in the queue at once.

Safety of a live claim: every renewal names the rows and the claim's attempt number (its
fencing token) and learns which are still held; a send starts only while its row's lease,
as last renewed, has a quarter of its length left. So a process paused past its lease (or cut
off from the database) stops sending what another may have taken, and its late record of what
it did send is refused (service/ledger/outbox.py record)."""

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db import utcnow
from service.dispatch.models import DispatcherWorker
from service.ledger import outbox
from service.ledger.outbox import Claimed

log = logging.getLogger("anjeon.dispatch")
RATE_WINDOW_S = 60.0
# A worker row this long past its end is forgotten (its alerts lapsed long ago).
FORGET_AFTER = timedelta(days=1)


def host_id() -> str:
    """This host and PID namespace: the scope in which a PID names one process."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"[:128]


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[19]) if len(fields) > 19 else None


def _gone(pid: int, pid_start: int | None) -> bool:
    """Whether the process that registered (pid, pid_start) on this host has ended."""
    if pid_start is None or not os.path.isdir("/proc/self"):
        return False  # cannot tell: its leases lapse instead
    return process_start(pid) != pid_start


class Holdings:
    """The rows this process holds: id -> (the claim's attempt, its lease end as last known,
    on the monotonic clock). Shared by the lanes, the sending threads and the heartbeat."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, tuple[int, float]] = {}

    def add(self, rows: Iterable[Claimed], *, until: float) -> None:
        with self._lock:
            for row in rows:
                self._rows[row.id] = (row.attempt, until)

    def drop(self, ids: Iterable[int]) -> None:
        with self._lock:
            for alert_id in ids:
                self._rows.pop(alert_id, None)

    def snapshot(self) -> dict[int, int]:
        with self._lock:
            return {alert_id: attempt for alert_id, (attempt, _) in self._rows.items()}

    def renewed(self, asked: dict[int, int], still: set[int], *, until: float) -> None:
        """A renewal of `asked` found `still` held: extend those, and void the rest."""
        with self._lock:
            for alert_id, attempt in asked.items():
                current = self._rows.get(alert_id)
                if current is None or current[0] != attempt:
                    continue  # recorded (or claimed again) meanwhile
                self._rows[alert_id] = (attempt, until if alert_id in still else 0.0)

    def may_send(self, row: Claimed, *, margin_s: float) -> bool:
        """The claim is still ours with `margin_s` of its lease left."""
        return self.send_window_end(row, margin_s=margin_s) > time.monotonic()

    def send_window_end(self, row: Claimed, *, margin_s: float) -> float:
        """Until when (time.monotonic()) a send of the row may start: its lease as last known,
        less `margin_s`; 0 when the claim is not ours."""
        with self._lock:
            current = self._rows.get(row.id)
        if current is None or current[0] != row.attempt:
            return 0.0
        return current[1] - margin_s

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


@dataclass
class SendRate:
    """Messages the providers accepted from this process, per channel, over the last minute."""

    started: float = field(default_factory=time.monotonic)
    _events: deque[tuple[float, str, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, channel: str, count: int) -> None:
        if count:
            with self._lock:
                self._events.append((time.monotonic(), channel, count))

    def per_second(self) -> dict[str, float]:
        now = time.monotonic()
        window = max(1.0, min(RATE_WINDOW_S, now - self.started))
        totals: dict[str, int] = {}
        with self._lock:
            while self._events and self._events[0][0] < now - RATE_WINDOW_S:
                self._events.popleft()
            for _, channel, count in self._events:
                totals[channel] = totals.get(channel, 0) + count
        return {channel: round(count / window, 3) for channel, count in totals.items()}


class DatabaseClock:
    """The time on the database's clock, as this process reads it. Leases are written by one
    process and read by another, so all must read them on one clock: a probe's dispatcher
    15 s fast took another's live claims for lapsed and sent 46 SMS twice, and one 15 s slow,
    70. The offset is measured at every heartbeat (PostgreSQL's clock_timestamp(), against the
    midpoint of the round trip); SQLite's clock is this machine's."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._told = timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self._offset

    @property
    def offset(self) -> timedelta:
        return self._offset

    def measure(self, session: Session) -> None:
        if session.get_bind().dialect.name != "postgresql":
            return
        before = utcnow()
        database_now = session.scalar(text("SELECT clock_timestamp()"))
        after = utcnow()
        self._offset = database_now - (before + (after - before) / 2)
        if abs(self._offset - self._told) > _CLOCK_TOLD_AFTER:
            self._told = self._offset
            log.warning(
                "this machine's clock differs from the database's: leases use the database's",
                extra={"offset_s": round(self._offset.total_seconds(), 3)},
            )


# A change of the clock's offset worth a log line (NTP keeps it within milliseconds).
_CLOCK_TOLD_AFTER = timedelta(seconds=1)


class Heartbeat:
    """Registers this dispatcher, renews its row and its claims every quarter lease, takes back
    the alerts of dead dispatchers on this host, and at the end gives its own back."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        worker: str,
        lease_s: float,
        holdings: Holdings,
        rates: SendRate,
        clock: DatabaseClock | None = None,
    ) -> None:
        self.factory = factory
        self.worker = worker
        self.clock = clock or DatabaseClock()
        self.lease_s = lease_s
        self.every_s = lease_s / 4
        self.holdings = holdings
        self.rates = rates
        self.host = host_id()
        self.pid = os.getpid()
        self.pid_start = process_start(self.pid)
        self.started_at = utcnow()
        # Dispatchers alive at the last beat, this one included: a sender's rate is divided by
        # it when the rate-limit storage is not shared (service/dispatch/pacing.py).
        self.live = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.beat()
        except SQLAlchemyError:
            log.warning("heartbeat: database unavailable at start; retrying", exc_info=True)
        self._thread = threading.Thread(target=self._run, name="dispatch-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except SQLAlchemyError as exc:
                # The claims are not renewed: once their lease runs short, sending stops
                # (Holdings.may_send) until a beat gets through again.
                log.warning("heartbeat failed", extra={"error": type(exc).__name__})

    def beat(self) -> None:
        """One renewal, in one short transaction."""
        asked = self.holdings.snapshot()
        started = time.monotonic()
        with self.factory.begin() as session:
            self.clock.measure(session)
            now = self.clock.now()
            outbox.bound_idle(session, lease_s=self.lease_s)
            self._register(session, now=now)
            still = outbox.renew(
                session,
                held=asked,
                worker=self.worker,
                lease_end=now + timedelta(seconds=self.lease_s),
            )
            stopped = outbox.overtaken(session, ids=still, now=now)
            # Not held any more: recorded meanwhile (the same claim), or claimed again.
            lost = outbox.claimed_again(
                session, held={i: a for i, a in asked.items() if i not in still}
            )
            self._take_back(session, now=now)
            self.live = max(1, alive(session, now=now))
        self.holdings.renewed(asked, still - stopped, until=started + self.lease_s)
        # Counted as len(asked) - len(still), every e-mail recorded during the renewal was
        # "lost": a dispatcher that sent all 28 alerts it claimed warned of 4.
        if lost:
            log.warning("claims lost to another dispatcher", extra={"lost": len(lost)})
        if stopped:
            log.info(
                "claims stopped: advisory revised or cancelled, or citizen erased",
                extra={"stopped": len(stopped)},
            )

    def _register(self, session: Session, *, now: datetime) -> None:
        values = {
            "heartbeat_at": now,
            "expires_at": now + timedelta(seconds=self.lease_s),
            "send_rate": self.rates.per_second(),
        }
        renewed = session.execute(
            update(DispatcherWorker)
            .where(DispatcherWorker.name == self.worker)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if renewed.rowcount:
            return
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            dialect.insert(DispatcherWorker)
            .values(
                name=self.worker,
                host=self.host,
                pid=self.pid,
                pid_start=self.pid_start,
                started_at=self.started_at,
                **values,
            )
            .on_conflict_do_nothing()
        )

    def _take_back(self, session: Session, *, now: datetime) -> None:
        """Alerts held by a dispatcher of this host that has ended go back in the queue now."""
        others = session.execute(
            select(DispatcherWorker.name, DispatcherWorker.pid, DispatcherWorker.pid_start).where(
                DispatcherWorker.host == self.host, DispatcherWorker.name != self.worker
            )
        ).all()
        for name, pid, pid_start in others:
            if _gone(pid, pid_start):
                released = outbox.release(session, worker=name, now=now)
                session.execute(delete(DispatcherWorker).where(DispatcherWorker.name == name))
                log.warning(
                    "took back the alerts of a dispatcher that ended",
                    extra={"worker": name, "alerts": released},
                )
        session.execute(
            delete(DispatcherWorker).where(DispatcherWorker.expires_at < now - FORGET_AFTER)
        )

    def stop(self) -> None:
        """Stop beating; what this process still holds goes back in the queue at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every_s + 5)
        try:
            with self.factory.begin() as session:
                outbox.bound_idle(session, lease_s=self.lease_s)
                outbox.release(session, worker=self.worker, now=self.clock.now())
                session.execute(
                    delete(DispatcherWorker).where(DispatcherWorker.name == self.worker)
                )
        except SQLAlchemyError:
            log.warning("could not sign off: my alerts lapse with their lease", exc_info=True)


def alive(session: Session, *, now: datetime) -> int:
    """Dispatchers whose heartbeat is current."""
    rows = session.execute(
        select(DispatcherWorker.name).where(DispatcherWorker.expires_at > now)
    ).all()
    return len(rows)
