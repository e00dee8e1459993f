"""The dispatchers' own tables: who is sending (a heartbeat row per dispatcher process) and
whether each notifier's provider is taking messages (its circuit breaker, shared by every
process so that N dispatchers do not hammer a provider that is down N times over)."""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime


class DispatcherWorker(Base):
    """One live dispatcher process. Its heartbeat renews this row and the leases of the alerts
    it holds; a row past `expires_at` is a dispatcher that stopped beating."""

    __tablename__ = "dispatcher_worker"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # = alert.claimed_by
    # Hostname and PID namespace: where `pid` names a process. A dispatcher restarted there
    # sees at once that an earlier one is gone and puts the alerts it held back in the queue.
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    # The process's start time in clock ticks since boot (/proc/PID/stat): a reused PID is
    # another process.
    pid_start: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Messages per second the providers accepted from this process over the last minute, by
    # channel: what /metrics sums as the send rate.
    send_rate: Mapped[dict] = mapped_column(JSON, default=dict)


class NotifierCircuit(Base):
    """A notifier's circuit breaker: closed (sending), open (a run of failures: nothing is
    sent until `open_until`), half_open (one dispatcher sends one probe)."""

    __tablename__ = "notifier_circuit"

    notifier: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(10))
    # Times it opened without closing in between: each re-opening waits twice as long.
    opened: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    probe_by: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (CheckConstraint("state IN ('closed', 'open', 'half_open')", name="state"),)
