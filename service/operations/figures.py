"""Figures /metrics reads from the database at scrape time, so every process (the API, a
dispatch worker, the CLI) reports the same queue and ledger, whoever did the work.

Per scrape, from the partial index over open alert rows: depth and oldest age per channel
(5M ledger rows, 20k open: ~5 ms on either backend; 1M open: ~0.1 s), and advisories by status
(a small table). Counting every ledger row and every citizen reads whole tables (5M alerts and
1M citizens: ~1 s on PostgreSQL, ~4.5 s on SQLite; measured 2026-12), so those totals are
re-read only when older than 100 times what their last read took (so at most once a minute on
a big ledger, at every scrape on a small one), by one scrape at a time, and their age is
reported beside them."""

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, and_, case, func, or_, select, text, true
from sqlalchemy.exc import SQLAlchemyError

from service.advisories.feeds import listing
from service.advisories.models import Advisory, FeedState
from service.citizens.models import Citizen
from service.citizens.schemas import Channel
from service.db import READ_ONLY, utcnow
from service.dispatch import circuit
from service.dispatch.models import DispatcherWorker, NotifierCircuit
from service.ledger import priority, states
from service.ledger.models import Alert
from service.staff.models import EXPIRY_WARNING, StaffKey

log = logging.getLogger("anjeon.metrics")

CHANNELS: tuple[str, ...] = get_args(Channel)
ADVISORY_STATES = ("active", "expired", "cancelled")
CITIZEN_STATES = ("active", "erased")
STAFF_KEY_STATES = ("active", "expiring", "expired", "revoked")
# The totals are re-read once older than 100 times what their last read took (about 1 % of the
# time: a small database is counted afresh at every scrape), and at least once a minute.
TOTALS_COST_FACTOR = 100
TOTALS_MAX_AGE_S = 60.0
# A scrape that finds the database slow gives up rather than pile up behind it.
STATEMENT_TIMEOUT_MS = 10_000
FEED_SEEN_WITHIN = timedelta(days=1)


@dataclass
class Queue:
    depth: dict[str, int]
    oldest_s: dict[str, float]
    advisories: dict[str, int]
    overdue_s: dict[str, float] = field(default_factory=dict)
    circuits: list[tuple[str, str, str]] = field(default_factory=list)  # notifier, channel, state
    dispatchers: int = 0
    send_rate: dict[str, float] = field(default_factory=dict)
    staff_keys: dict[str, int] = field(default_factory=dict)
    # name, last poll failed, seconds since its last successful poll (or its first poll),
    # seconds since its document last changed (None before any was read), items refused in
    # its last document read
    # (name, failing, seconds unfed, seconds unchanged, rejected items, unlisted advisories)
    feeds: list[tuple[str, bool, float, float | None, int, int]] = field(default_factory=list)


@dataclass
class Totals:
    alerts: dict[tuple[str, str], int]
    citizens: dict[str, int]
    # Failed alerts whose contact no listed data secret opens, by channel (counted in the
    # same read of the ledger).
    unreadable: dict[str, int] = field(default_factory=dict)
    # Failed alerts whose message could not be prepared (a fault in the service), by channel.
    unprepared: dict[str, int] = field(default_factory=dict)
    cost_s: float = 0.0
    read_at: float = field(default_factory=time.monotonic)

    def stale(self, max_age_s: float) -> bool:
        age = time.monotonic() - self.read_at
        return age > min(max_age_s, TOTALS_COST_FACTOR * self.cost_s)


def _known(value: str, allowed: Iterable[str]) -> str:
    # Label values come from rows; anything unforeseen is folded so the series stay bounded.
    return value if value in allowed else "other"


def read_queue(
    connection: Connection,
    *,
    now: datetime,
    notifier_channels: Mapping[str, Iterable[str]] | None = None,
) -> Queue:
    """Open rows per channel and the oldest one's age, from the open-rows index alone.
    `notifier_channels`: the channels each configured notifier sends (one circuit holds them
    all; its row names only the channel that wrote it first)."""
    # Spelled as the index's own condition: SQLite uses a partial index only when the query's
    # WHERE visibly implies it, and bound parameters hide that (a 5M-row scan, 1 s).
    is_open = text(states.sql_in(states.OPEN))
    # Count and lowest id per channel in one pass over that index; the lowest open id is the
    # oldest open row. (`ORDER BY id LIMIT 1` per channel lets PostgreSQL walk the primary key
    # past every settled row instead: 0.8 s at 5M rows.)
    heads = connection.execute(
        select(Alert.channel, func.count(), func.min(Alert.id))
        .where(is_open)
        .group_by(Alert.channel)
    ).all()
    depth = {channel: count for channel, count, _ in heads}
    created = dict(
        connection.execute(
            select(Alert.channel, Alert.created_at).where(Alert.id.in_([i for *_, i in heads]))
        ).all()
    )
    oldest = {channel: (now - at).total_seconds() for channel, at in created.items()}
    status_now = case(
        (and_(Advisory.status == "active", Advisory.expires <= now), "expired"),
        else_=Advisory.status,
    )
    advisories = dict(
        connection.execute(select(status_now, func.count()).group_by(status_now)).all()
    )
    circuit_rows = connection.execute(
        select(
            NotifierCircuit.notifier,
            NotifierCircuit.channel,
            NotifierCircuit.state,
            NotifierCircuit.open_until,
        )
    ).all()
    circuits = [(notifier, channel, state) for notifier, channel, state, _ in circuit_rows]
    # An open circuit holds its channel's alerts but the urgent classes (which dispatchers
    # claim, then hold with a new due time or send on the other channel): the rest are not due
    # while it is open (an operator saw the overdue figure grow 1 s a second beside the open
    # circuit, and a page that pointed at the queue, not at the provider).
    held = {
        held_channel
        for notifier, channel, state, until in circuit_rows
        if state == circuit.OPEN and until is not None and _aware(until) > now
        for held_channel in (notifier_channels or {}).get(notifier, [channel])
    }
    not_held = (
        or_(Alert.channel.not_in(held), Alert.priority.in_(priority.URGENT)) if held else true()
    )
    # Rows due now and not taken (or whose claim lapsed): the oldest wait is backpressure. Rows
    # held on purpose (quiet hours, a retry's backoff, an open circuit) are not due yet.
    due = connection.execute(
        select(Alert.channel, func.min(func.coalesce(Alert.due_at, Alert.created_at)))
        .where(is_open, or_(Alert.due_at.is_(None), Alert.due_at <= now), not_held)
        .group_by(Alert.channel)
    ).all()
    overdue = {
        channel: max(0.0, (now - _aware(since)).total_seconds()) for channel, since in due if since
    }
    workers = connection.execute(
        select(DispatcherWorker.send_rate).where(DispatcherWorker.expires_at > now)
    ).all()
    rate: dict[str, float] = {}
    for (per_channel,) in workers:
        for channel, value in (per_channel or {}).items():
            rate[channel] = rate.get(channel, 0.0) + float(value)
    key_state = case(
        (StaffKey.revoked_at.is_not(None), "revoked"),
        (StaffKey.expires_at <= now, "expired"),
        (StaffKey.expires_at <= now + EXPIRY_WARNING, "expiring"),
        else_="active",
    )
    staff_keys = dict(connection.execute(select(key_state, func.count()).group_by(key_state)).all())
    # Feeds polled in the last day (one dropped from feeds.toml stops counting after a day).
    feeds = [
        (
            name,
            outcome == "error",
            (now - _aware(since)).total_seconds(),
            None if changed is None else (now - _aware(changed)).total_seconds(),
            rejected or 0,
            len(listing.unlisted(connection, feed=name, listed=listed, failing=outcome == "error")),
        )
        for name, outcome, since, changed, rejected, listed in connection.execute(
            select(
                FeedState.name,
                FeedState.last_outcome,
                # Never a success: since its first poll (one failed poll of a new feed is not
                # yet two missed polls). Polled before that was kept: since its last poll.
                func.coalesce(
                    FeedState.last_success_at, FeedState.first_polled_at, FeedState.last_polled_at
                ),
                FeedState.changed_at,
                FeedState.rejected_items,
                FeedState.listed,
            )
            .where(FeedState.last_polled_at > now - FEED_SEEN_WITHIN)
            .order_by(FeedState.name)
        ).all()
    ]
    return Queue(
        depth=depth,
        oldest_s=oldest,
        advisories=advisories,
        overdue_s=overdue,
        circuits=circuits,
        dispatchers=len(workers),
        send_rate=rate,
        staff_keys=staff_keys,
        feeds=feeds,
    )


def _per_feed(name: str, documentation: str, values: dict[str, int]) -> GaugeMetricFamily:
    """A gauge of one figure from the feeds file for each feed that has it."""
    family = GaugeMetricFamily(name, documentation, labels=["feed"])
    for feed, value in sorted(values.items()):
        family.add_metric([feed[:64]], value)
    return family


def _aware(moment: datetime | str) -> datetime:
    """COALESCE hides the column type from SQLite's driver: it may hand back text."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_totals(connection: Connection) -> Totals:
    """Every ledger row by channel and status, every citizen by status: whole-table reads."""
    started = time.perf_counter()
    unreadable_failure = and_(
        Alert.status == states.FAILED, Alert.error_code == states.CODE_UNREADABLE
    )
    unprepared_failure = and_(
        Alert.status == states.FAILED, Alert.error_code == states.CODE_UNPREPARED
    )
    alerts: dict[tuple[str, str], int] = {}
    unreadable: dict[str, int] = {}
    unprepared: dict[str, int] = {}
    for channel, status, count, unopened, faulty in connection.execute(
        select(
            Alert.channel,
            Alert.status,
            func.count(),
            func.count().filter(unreadable_failure),
            func.count().filter(unprepared_failure),
        ).group_by(Alert.channel, Alert.status)
    ).all():
        alerts[(channel, status)] = count
        unreadable[channel] = unreadable.get(channel, 0) + unopened
        unprepared[channel] = unprepared.get(channel, 0) + faulty
    citizens = dict(
        connection.execute(select(Citizen.status, func.count()).group_by(Citizen.status)).all()
    )
    return Totals(
        alerts=alerts,
        citizens=citizens,
        unreadable=unreadable,
        unprepared=unprepared,
        cost_s=time.perf_counter() - started,
    )


class DatabaseFigures(Collector):
    """A prometheus_client collector: reads the figures above when /metrics is scraped. With
    the database down it reports anjeon_database_up 0 and nothing else of its own."""

    def __init__(
        self,
        engine: Engine,
        *,
        totals_max_age_s: float = TOTALS_MAX_AGE_S,
        feed_intervals: dict[str, int] | None = None,
        feed_stale_after: dict[str, int] | None = None,
        notifier_channels: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.engine = engine
        self.notifier_channels = notifier_channels or {}
        self.feed_intervals = feed_intervals or {}  # the enabled feeds' poll intervals
        self.feed_stale_after = feed_stale_after or {}  # and their stale_after_s, when set
        self.totals_max_age_s = totals_max_age_s
        self._totals: Totals | None = None
        # One scrape re-reads the totals; a concurrent one reports the last ones meanwhile.
        self._refreshing = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        empty = Queue(depth={}, oldest_s={}, advisories={}), Totals(alerts={}, citizens={})
        yield from self._families(*empty, up=0, read_s=0.0)

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            queue = self._read()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unreadable", extra={"error": type(exc).__name__})
            queue = None
        yield from self._families(
            queue, self._totals, up=int(queue is not None), read_s=time.perf_counter() - started
        )

    def _read(self) -> Queue:
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SET TRANSACTION READ ONLY"))
                connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            queue = read_queue(connection, now=utcnow(), notifier_channels=self.notifier_channels)
            stale = self._totals is None or self._totals.stale(self.totals_max_age_s)
            if stale and self._refreshing.acquire(blocking=False):
                try:
                    self._totals = read_totals(connection)
                finally:
                    self._refreshing.release()
            return queue

    def _families(
        self, queue: Queue | None, totals: Totals | None, *, up: int, read_s: float
    ) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "anjeon_database_up",
            "1 when this scrape could read the figures below from the database, else 0",
            value=up,
        )
        yield GaugeMetricFamily(
            "anjeon_metrics_read_seconds", "Time this scrape spent reading the database", read_s
        )
        if queue is None:
            return
        yield _by_channel(
            "anjeon_alert_queue_depth",
            "Alert rows not settled yet (pending, retry_wait, claimed), from the database",
            queue.depth,
        )
        yield _by_channel(
            "anjeon_alert_oldest_open_seconds",
            "Age of the oldest alert row not settled yet (0 when none), from the database",
            queue.oldest_s,
        )
        yield _by_channel(
            "anjeon_alert_overdue_seconds",
            "How long the most overdue alert that is due to be sent has waited: now minus its due "
            "time (or its creation). Alerts held on purpose (quiet hours, backoff, an open "
            "circuit) are not due. 0 when none; from the database",
            queue.overdue_s,
        )
        yield _by_channel(
            "anjeon_send_rate",
            "Messages per second the providers accepted over the last minute, summed over the "
            "live dispatchers (as their heartbeats wrote it to the database)",
            queue.send_rate,
        )
        states_ = GaugeMetricFamily(
            "anjeon_notifier_circuit_state",
            "Each notifier's circuit breaker, shared by every dispatcher: 0 closed, 1 open "
            "(nothing sent to that provider), 2 half-open (one probe)",
            labels=["notifier", "channel"],
        )
        for notifier, channel, state in sorted(queue.circuits):
            states_.add_metric(
                [notifier[:32], _known(channel, CHANNELS)], circuit.GAUGE.get(state, 1)
            )
        yield states_
        yield GaugeMetricFamily(
            "anjeon_dispatchers_alive",
            "Dispatcher processes whose heartbeat is current (from the database)",
            value=queue.dispatchers,
        )
        yield _by_status(
            "anjeon_advisories",
            "Advisories by status as of the scrape (past its end counts as expired)",
            queue.advisories,
            ADVISORY_STATES,
        )
        yield _by_status(
            "anjeon_staff_keys",
            "Staff keys by status: active, expiring (within 14 days of their end: an admin "
            "reissues them), expired, revoked; from the database",
            queue.staff_keys,
            STAFF_KEY_STATES,
        )
        failing = GaugeMetricFamily(
            "anjeon_feed_failing",
            "1 when a feed's last poll failed (fetch, size, parse), 0 when it succeeded; feeds "
            "polled in the last day, from the database",
            labels=["feed"],
        )
        unfed = GaugeMetricFamily(
            "anjeon_feed_unfed_seconds",
            "Seconds since a feed's last successful poll (since its first poll when none has "
            "succeeded); feeds polled in the last day, from the database",
            labels=["feed"],
        )
        unchanged = GaugeMetricFamily(
            "anjeon_feed_unchanged_seconds",
            "Seconds since a poll last brought a feed's document different from the one before "
            "(a 304 is no change); feeds polled in the last day, from the database",
            labels=["feed"],
        )
        refused = GaugeMetricFamily(
            "anjeon_feed_rejected_items",
            "Items of a feed's last document read that were refused (malformed, or under an "
            "identifier another source holds): warnings that reached nobody; GET /v1/feeds "
            "says which and why; feeds polled in the last day, from the database",
            labels=["feed"],
        )
        unlisted = GaugeMetricFamily(
            "anjeon_feed_unlisted_advisories",
            "A feed's advisories with no end of their own (standing or waiting for approval) "
            "that its last document read no longer listed at a level that makes one: its "
            "source lifted or lowered them; staff end them (GET /v1/feeds names them); feeds "
            "polled in the last day, from the database",
            labels=["feed"],
        )
        for name, failed, since_success, since_change, rejected, dropped in queue.feeds:
            failing.add_metric([name[:64]], 1 if failed else 0)
            refused.add_metric([name[:64]], rejected)
            unlisted.add_metric([name[:64]], dropped)
            unfed.add_metric([name[:64]], since_success)
            if since_change is not None:
                unchanged.add_metric([name[:64]], since_change)
        yield failing
        yield unfed
        yield unchanged
        yield refused
        yield unlisted
        yield _per_feed(
            "anjeon_feed_interval_seconds",
            "Each enabled feed's poll interval, from the feeds file (AnjeonFeedFailing waits "
            "for two missed polls of a slow feed)",
            self.feed_intervals,
        )
        yield _per_feed(
            "anjeon_feed_stale_after_seconds",
            "Each enabled feed's stale_after_s, from the feeds file, for the feeds that set it "
            "(AnjeonFeedStale: its document unchanged for longer)",
            self.feed_stale_after,
        )
        if totals is None:
            return
        alerts = GaugeMetricFamily(
            "anjeon_alerts",
            "Alert ledger rows by channel and status, from the database (see "
            "anjeon_totals_age_seconds)",
            labels=["channel", "status"],
        )
        counted: dict[tuple[str, str], int] = {}
        for (channel, status), count in totals.alerts.items():
            key = (_known(channel, CHANNELS), _known(status, states.ALL))
            counted[key] = counted.get(key, 0) + count
        for channel in CHANNELS:
            for status in states.ALL:
                alerts.add_metric([channel, status], counted.pop((channel, status), 0))
        for (channel, status), count in sorted(counted.items()):
            alerts.add_metric([channel, status], count)
        yield alerts
        yield _by_channel(
            "anjeon_alerts_unreadable",
            "Failed alerts whose contact no listed data secret opens (ANJEON_DATA_KEYS), by "
            "channel, from the database (see anjeon_totals_age_seconds): their citizens were "
            "not told until anjeon reseal queues them again",
            totals.unreadable,
        )
        yield _by_channel(
            "anjeon_alerts_unprepared",
            "Failed alerts whose message could not be prepared (a fault in the service, error "
            "code unprepared, its traceback in the log), by channel, from the database (see "
            "anjeon_totals_age_seconds): their citizens were not told on that channel",
            totals.unprepared,
        )
        yield _by_status(
            "anjeon_citizens",
            "Citizens by status, from the database (see anjeon_totals_age_seconds)",
            totals.citizens,
            CITIZEN_STATES,
        )
        yield GaugeMetricFamily(
            "anjeon_totals_age_seconds",
            "Age of anjeon_alerts, anjeon_alerts_unreadable, anjeon_alerts_unprepared and "
            "anjeon_citizens: re-read when "
            "older than 100 times what reading them took, and at least once a minute",
            time.monotonic() - totals.read_at,
        )


def _by_channel(name: str, documentation: str, values: dict[str, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["channel"])
    for channel in CHANNELS:
        family.add_metric([channel], values.get(channel, 0))
    return family


def _by_status(
    name: str, documentation: str, counts: dict[str, int], known: tuple[str, ...]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    folded = {status: 0 for status in known}
    for status, count in counts.items():
        key = _known(status, known)
        folded[key] = folded.get(key, 0) + count
    for status, count in folded.items():
        family.add_metric([status], count)
    return family
