"""Geomatching: at once for one advisory or one citizen, and as a sweep over everything.
New (advisory revision, citizen, channel) pairs go into the alert ledger in the caller's
transaction; the ledger's unique key makes any path running twice harmless."""

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.models import Advisory
from service.citizens.models import Citizen
from service.db import utcnow
from service.geo import matching
from service.geo.areas import Area
from service.geomatch import postgis, targets
from service.geomatch.places import Reachable, load_places, load_reachable, merge, with_alerting
from service.geomatch.targets import Live
from service.ledger import outbox, priority
from service.ledger.enqueue import alert_rows, insert_alerts
from service.ledger.models import Alert
from service.ledger.wake import mark_enqueued


@dataclass
class MatchResult:
    matched: int = 0  # (advisory, citizen) pairs in reach now
    enqueued: int = 0  # new alert rows
    advisories: int = 0
    # Where the time went (seconds), for the benchmark and the sweep's log line.
    load_s: float = 0.0
    match_s: float = 0.0
    write_s: float = 0.0


def alerting(advisory: Advisory, *, now: datetime) -> bool:
    """Whether an advisory may enqueue alerts at all."""
    return (
        advisory.status == "active"
        and advisory.alerts_citizens
        and (advisory.expires is None or advisory.expires > now)
    )


def match_advisories(session: Session, *, advisories: list[Advisory], now: datetime) -> MatchResult:
    """Enqueue everyone new or revised advisories reach (one read of the places for all)."""
    live = [a for a in advisories if alerting(a, now=now)]
    if not live:
        return MatchResult()
    session.flush()
    for advisory in live:
        targets.remember(advisory)
    lives = [targets.live_of(a) for a in live]
    areas = targets.areas_of(session, lives)
    if session.connection().dialect.name == "postgresql":
        return _enqueue_in_postgis(session, lives, areas, now=now)
    started = time.perf_counter()
    connection = session.connection()
    places = load_places(
        connection,
        today=now.date(),
        boxes=[box for area in areas for box in targets.boxes_of(area)],
        countries=sorted({code for area in areas for code in area.countries}),
        country_only=sorted({code for area in areas for code in area.country_only}),
    )
    today = matching.day_number(now.date())
    matched = [
        matching.match(targets.target(live, area, now=now), places, today=today)
        for live, area in zip(lives, areas, strict=True)
    ]
    reachable = with_alerting(
        connection,
        places,
        matching.sorted_unique(np.concatenate(matched)),
        exercises=any(live.exercise for live in lives),
    )
    matched = [ids[np.isin(ids, reachable.citizen_ids, assume_unique=True)] for ids in matched]
    result = _enqueue(session, lives, areas, reachable, now=now, matched=matched)
    result.load_s = time.perf_counter() - started - result.write_s
    return result


def _enqueue_in_postgis(
    session: Session, lives: list[Live], areas: list[Area], *, now: datetime
) -> MatchResult:
    """On PostgreSQL a new advisory is matched and enqueued inside PostGIS: no place leaves the
    database. (Pairs are not counted on this path, only the rows it enqueued.)"""
    result = MatchResult(advisories=len(lives))
    today = matching.day_number(now.date())
    started = time.perf_counter()
    for live, area in zip(lives, areas, strict=True):
        result.enqueued += postgis.enqueue(
            session.connection(),
            target=targets.target(live, area, now=now),
            revision=live.revision,
            priority=priority.of_level(live.level),
            today=today,
            now=now,
            exercise=live.exercise,
        )
    result.match_s = time.perf_counter() - started
    if result.enqueued:
        mark_enqueued(session)
    return result


def match_citizen(session: Session, *, citizen_id: int, now: datetime) -> MatchResult:
    """Enqueue what the active advisories say to one citizen who registered or moved: only the
    advisories whose shapes' boxes (or countries) hold one of the citizen's places are tried."""
    session.flush()
    reachable = load_reachable(session.connection(), today=now.date(), citizen_id=citizen_id)
    if len(reachable.places) == 0:
        return MatchResult()
    lives = targets.live_advisories(session, now=now)
    if not lives:
        return MatchResult()
    areas = targets.areas_of(session, lives)
    nearby = targets.index_for(lives, areas).candidates(reachable.places)
    return _enqueue(
        session, [lives[i] for i in nearby], [areas[i] for i in nearby], reachable, now=now
    )


# A transaction may commit a few minutes after it stamped updated_at: look back this far.
_CHANGE_OVERLAP = timedelta(minutes=10)
_MAX_INCREMENTAL = 20_000  # more changed citizens than this: read everything again
_WRITE_BATCH = 250_000


@dataclass
class Sweeper:
    """The scheduled sweep, kept by the process that holds the sweep lease. Between sweeps it
    keeps the places it read (re-reading only citizens changed since, by citizen.updated_at) and
    which pairs it enqueued (after commit), so a steady-state sweep reads and writes little.
    Both memories only save work: the database and the ledger's key decide."""

    known: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    snapshot: Reachable | None = None
    snapshot_day: date | None = None
    read_since: datetime | None = None

    def run(self, factory: sessionmaker[Session], *, now: datetime) -> MatchResult:
        """One sweep in one transaction."""
        pending = dict(self.known)
        with factory.begin() as session:
            started = time.perf_counter()
            reachable = self._places(session, now=now)
            lives = targets.live_advisories(session, now=now)
            areas = targets.areas_of(session, lives)
            load_s = time.perf_counter() - started
            result = _enqueue(session, lives, areas, reachable, now=now, known=pending)
            result.load_s = load_s
        live_keys = {(live.id, live.revision) for live in lives}
        self.known = {key: ids for key, ids in pending.items() if key in live_keys}
        self.snapshot, self.snapshot_day, self.read_since = reachable, now.date(), now
        return result

    def _places(self, session: Session, *, now: datetime) -> Reachable:
        connection = session.connection()
        if self.snapshot is None or self.snapshot_day != now.date() or self.read_since is None:
            return load_reachable(connection, today=now.date())
        changed = np.fromiter(
            session.scalars(
                select(Citizen.id).where(Citizen.updated_at >= self.read_since - _CHANGE_OVERLAP)
            ),
            dtype=np.int64,
        )
        if changed.size == 0:
            return self.snapshot
        if changed.size > _MAX_INCREMENTAL:
            return load_reachable(connection, today=now.date())
        fresh = load_reachable(connection, today=now.date(), citizen_ids=changed.tolist())
        return merge(self.snapshot, changed, fresh)


def cancel_pending_for(session: Session, *, citizen_id: int) -> int:
    """An erased citizen's alerts not yet sent are dropped."""
    return outbox.forget_citizen(session, citizen_id=citizen_id, now=utcnow())


def _enqueue(
    session: Session,
    lives: list[Live],
    areas: list[Area],
    reachable: Reachable,
    *,
    now: datetime,
    known: dict[tuple[int, int], np.ndarray] | None = None,
    matched: list[np.ndarray] | None = None,
) -> MatchResult:
    """Enqueue what each target reaches among the places: matched here, or already (`matched`,
    aligned with `lives`, only citizens of `reachable.citizen_ids`). A drill reaches only those
    who opted in to exercises."""
    result = MatchResult(advisories=len(lives))
    today = matching.day_number(now.date())
    rows: list[tuple[int, int, int, str, int]] = []
    fresh: dict[tuple[int, int], np.ndarray] = {}
    for i, (live, area) in enumerate(zip(lives, areas, strict=True)):
        started = time.perf_counter()
        if matched is not None:
            ids = matched[i]
        else:
            target = targets.target(live, area, now=now)
            ids = matching.match(target, reachable.places, today=today)
        if live.exercise:
            ids = reachable.opted_in(ids)
        result.match_s += time.perf_counter() - started
        result.matched += len(ids)
        key = (live.id, live.revision)
        if known is not None:
            if key not in known:
                known[key] = _enqueued_ids(session, live)
            ids = ids[~np.isin(ids, known[key], assume_unique=True)]
        if ids.size == 0:
            continue
        sms_ids, email_ids = reachable.channels_of(ids)
        rows.extend(
            alert_rows(
                live.id,
                live.revision,
                priority=priority.of_level(live.level),
                sms_ids=sms_ids,
                email_ids=email_ids,
            )
        )
        fresh[key] = ids
        if len(rows) >= _WRITE_BATCH:  # millions of row tuples at once would cost a GiB
            result.enqueued += _write(session, rows, now=now, result=result)
            rows = []
    result.enqueued += _write(session, rows, now=now, result=result)
    if known is not None:
        for key, ids in fresh.items():
            known[key] = np.union1d(known[key], ids)
    return result


def _write(session: Session, rows: list[tuple], *, now: datetime, result: MatchResult) -> int:
    started = time.perf_counter()
    written = insert_alerts(session.connection(), rows=rows, now=now)
    result.write_s += time.perf_counter() - started
    if written:
        mark_enqueued(session)
    return written


def _enqueued_ids(session: Session, live: Live) -> np.ndarray:
    rows = session.execute(
        select(Alert.citizen_id)
        .where(Alert.advisory_id == live.id, Alert.revision == live.revision)
        .distinct()
    ).scalars()
    return matching.sorted_unique(np.fromiter(rows, dtype=np.int64))
