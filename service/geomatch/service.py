"""Geomatching: at once for one advisory or one citizen, and as a sweep over everything.
New (advisory revision, citizen, channel) pairs go into the alert ledger in the caller's
transaction; the ledger's unique key makes any path running twice harmless."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain, pairwise

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.models import Advisory
from service.citizens.models import Citizen
from service.db import utcnow
from service.geo import matching
from service.geo.areas import Area
from service.geomatch import postgis, targets
from service.geomatch.arrivals import ask_arrivals
from service.geomatch.places import Reachable, load_places, load_reachable, with_alerting
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
    asked_on_arrival: int = 0  # citizens told ahead, now there, asked (the sweep's, arrivals.py)
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
    today = matching.Today.at(now)
    places = load_places(
        connection,
        today=today,
        boxes=[box for area in areas for box in targets.boxes_of(area)],
        countries=sorted({code for area in areas for code in area.countries}),
        country_only=sorted({code for area in areas for code in area.country_only}),
    )
    found = [
        matching.match_with_ahead(targets.target(live, area, now=now), places, today=today)
        for live, area in zip(lives, areas, strict=True)
    ]
    reachable = with_alerting(
        connection,
        places,
        matching.sorted_unique(np.concatenate([ids for ids, _ in found])),
        exercises=any(live.exercise for live in lives),
    )
    matched = [
        (ids[np.isin(ids, reachable.citizen_ids, assume_unique=True)], ahead)
        for ids, ahead in found
    ]
    result = _enqueue(session, lives, areas, reachable, now=now, matched=matched)
    result.load_s = time.perf_counter() - started - result.write_s
    return result


def _enqueue_in_postgis(
    session: Session, lives: list[Live], areas: list[Area], *, now: datetime
) -> MatchResult:
    """On PostgreSQL a new advisory is matched and enqueued inside PostGIS: no place leaves the
    database. (Pairs are not counted on this path, only the rows it enqueued.)"""
    result = MatchResult(advisories=len(lives))
    today = matching.Today.at(now)
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
    reachable = load_reachable(
        session.connection(), today=matching.Today.at(now), citizen_id=citizen_id
    )
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
_CHANGED_BATCH = 10_000  # changed citizens read and matched at a time
_WRITE_BATCH = 250_000
# Citizens (by id range) whose places one step of a full pass holds: memory is bounded by this,
# not by the registry (a million citizens' places read at once cost the process ~800 MB).
SHARD_CITIZENS = 200_000
# On PostgreSQL a few advisories to check against everyone go to PostGIS: no place leaves the
# database. Many at once (a first sweep) go through the engine, shard by shard.
POSTGIS_AT_MOST = 4


@dataclass
class Sweeper:
    """The scheduled sweep, kept by the process that holds the sweep lease. It remembers which
    advisories it has checked against everyone, and in which state (current locations in reach
    or not yet), and when it last read the registry. A sweep then checks against everyone only
    the advisories that are new to it or became effective (by shards of citizens, so memory does
    not grow with the registry), and every advisory only against citizens changed since
    (citizen.updated_at). Time alone adds no other pair: a stay or an advisory ending only
    removes. The memory only saves work: the database and the ledger's key decide."""

    swept: dict[tuple[int, int, datetime], bool] = field(default_factory=dict)
    read_since: datetime | None = None
    shard_citizens: int = SHARD_CITIZENS

    def run(self, factory: sessionmaker[Session], *, now: datetime) -> MatchResult:
        """One sweep. Checking advisories against everyone takes a transaction per shard of
        citizens, so a first sweep of a large registry commits as it goes instead of outliving
        its lease (a lease-fenced factory renews the lease at each commit); what it committed
        before a failure is kept, and the ledger's key makes the next sweep skip it."""
        with factory.begin() as session:
            started = time.perf_counter()
            lives = targets.live_advisories(session, now=now)
            areas = targets.areas_of(session, lives)
            span = session.execute(select(func.min(Citizen.id), func.max(Citizen.id))).one()
        result = MatchResult(advisories=len(lives), load_s=time.perf_counter() - started)
        fresh = [self.swept.get(live.key) != _active_now(live, now) for live in lives]
        whole = [i for i, new in enumerate(fresh) if new]
        if whole:
            picked = ([lives[i] for i in whole], [areas[i] for i in whole])
            _add(result, self._everyone(factory, *picked, span=span, now=now))
        kept = [i for i, new in enumerate(fresh) if not new]
        if kept and self.read_since is not None:
            # All of them (the steady case): the very list, whose target index is kept.
            picked = (
                (lives, areas)
                if not whole
                else ([lives[i] for i in kept], [areas[i] for i in kept])
            )
            since = self.read_since - _CHANGE_OVERLAP
            with factory.begin() as session:
                _add(result, _changed(session, *picked, since=since, now=now))
        with factory.begin() as session:
            result.asked_on_arrival = ask_arrivals(session, lives, areas, now=now)
        self.swept = {live.key: _active_now(live, now) for live in lives}
        self.read_since = now
        return result

    def _everyone(
        self,
        factory: sessionmaker[Session],
        lives: list[Live],
        areas: list[Area],
        *,
        span: tuple[int | None, int | None],
        now: datetime,
    ) -> MatchResult:
        """These advisories against every citizen: in PostGIS when few (PostgreSQL), else by
        the engine over one shard of citizens (an id range) at a time, a transaction each."""
        result = MatchResult()
        with factory.begin() as session:
            if len(lives) <= POSTGIS_AT_MOST and session.connection().dialect.name == "postgresql":
                return _enqueue_in_postgis(session, lives, areas, now=now)
        low, high = span
        if low is None or high is None:
            return result
        for first in range(low, high + 1, self.shard_citizens):
            with factory.begin() as session:
                started = time.perf_counter()
                shard = (first, first + self.shard_citizens - 1)
                reachable = load_reachable(
                    session.connection(), today=matching.Today.at(now), id_range=shard
                )
                ledger = _enqueued_in(session, lives, shard)
                load_s = time.perf_counter() - started
                part = _enqueue(
                    session,
                    lives,
                    areas,
                    reachable,
                    now=now,
                    enqueued=lambda live, ledger=ledger: ledger.get(
                        (live.id, live.revision), _NONE
                    ),
                )
            part.load_s = load_s
            _add(result, part)
        return result


def _changed(
    session: Session, lives: list[Live], areas: list[Area], *, since: datetime, now: datetime
) -> MatchResult:
    """These advisories against the citizens changed since then, a batch at a time."""
    result = MatchResult()
    changed = session.scalars(
        select(Citizen.id).where(Citizen.updated_at >= since).order_by(Citizen.id)
    ).all()
    for first in range(0, len(changed), _CHANGED_BATCH):
        started = time.perf_counter()
        batch = changed[first : first + _CHANGED_BATCH]
        reachable = load_reachable(
            session.connection(), today=matching.Today.at(now), citizen_ids=batch
        )
        nearby = targets.index_for(lives, areas).candidates(reachable.places)
        ledger = _enqueued_for(session, batch)
        load_s = time.perf_counter() - started
        part = _enqueue(
            session,
            [lives[i] for i in nearby],
            [areas[i] for i in nearby],
            reachable,
            now=now,
            enqueued=lambda live, ledger=ledger: ledger.get((live.id, live.revision), _NONE),
        )
        part.load_s = load_s
        _add(result, part)
    return result


def _active_now(live: Live, now: datetime) -> bool:
    """Whether current locations are in reach (a live advisory has not expired)."""
    return live.effective <= now


def _add(total: MatchResult, part: MatchResult) -> None:
    total.matched += part.matched
    total.enqueued += part.enqueued
    total.load_s += part.load_s
    total.match_s += part.match_s
    total.write_s += part.write_s


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
    matched: list[tuple[np.ndarray, np.ndarray]] | None = None,
    enqueued: Callable[[Live], np.ndarray] | None = None,
) -> MatchResult:
    """Enqueue what each target reaches among the places: matched here, or already (`matched`,
    aligned with `lives`: the ids, only citizens of `reachable.citizen_ids`, and those reached
    only ahead of time). A drill reaches only those who opted in to exercises. The sweep leaves
    out the citizens `enqueued` says the ledger already holds for a revision (sorted ids), on
    any channel. Rows of citizens reached only ahead of time are marked so (told, not asked)."""
    result = MatchResult(advisories=len(lives))
    today = matching.Today.at(now)
    rows: list[tuple[int, int, int, str, int, bool]] = []
    for i, (live, area) in enumerate(zip(lives, areas, strict=True)):
        started = time.perf_counter()
        if matched is not None:
            ids, ahead = matched[i]
        else:
            target = targets.target(live, area, now=now)
            ids, ahead = matching.match_with_ahead(target, reachable.places, today=today)
        if live.exercise:
            ids = reachable.opted_in(ids)
        result.match_s += time.perf_counter() - started
        result.matched += len(ids)
        if enqueued is not None and ids.size:
            ids = ids[~np.isin(ids, enqueued(live), assume_unique=True)]
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
                ahead_ids=ahead,
            )
        )
        if len(rows) >= _WRITE_BATCH:  # millions of row tuples at once would cost a GiB
            result.enqueued += _write(session, rows, now=now, result=result)
            rows = []
    result.enqueued += _write(session, rows, now=now, result=result)
    return result


def _write(session: Session, rows: list[tuple], *, now: datetime, result: MatchResult) -> int:
    started = time.perf_counter()
    written = insert_alerts(session.connection(), rows=rows, now=now)
    result.write_s += time.perf_counter() - started
    if written:
        mark_enqueued(session)
    return written


_NONE = np.empty(0, dtype=np.int64)


def _enqueued_in(
    session: Session, lives: list[Live], shard: tuple[int, int]
) -> dict[tuple[int, int], np.ndarray]:
    """Which of a shard's citizens the ledger holds, by (advisory, revision): one query, each
    advisory's part of it a range of the ledger's key."""
    rows = session.execute(
        select(Alert.advisory_id, Alert.revision, Alert.citizen_id)
        .where(
            Alert.advisory_id.in_(sorted({live.id for live in lives})),
            Alert.revision.in_(sorted({live.revision for live in lives})),
            Alert.citizen_id.between(*shard),
        )
        .order_by(Alert.advisory_id, Alert.revision, Alert.citizen_id)
    )
    columns = [
        np.fromiter(chain.from_iterable(part), dtype=np.int64, count=3 * len(part)).reshape(-1, 3)
        for part in rows.partitions(100_000)
    ]
    table = np.concatenate(columns) if columns else np.empty((0, 3), dtype=np.int64)
    # Rows come in key order: each (advisory, revision) is one run of them.
    starts = np.flatnonzero(np.any(table[1:, :2] != table[:-1, :2], axis=1)) + 1
    bounds = [0, *starts.tolist(), len(table)]
    return {
        (int(table[lo, 0]), int(table[lo, 1])): matching.sorted_unique(table[lo:hi, 2])
        for lo, hi in pairwise(bounds)
        if hi > lo
    }


def _enqueued_for(session: Session, citizen_ids: list[int]) -> dict[tuple[int, int], np.ndarray]:
    """Which of these citizens the ledger holds, by (advisory, revision): one query."""
    rows = session.execute(
        select(Alert.advisory_id, Alert.revision, Alert.citizen_id).where(
            Alert.citizen_id.in_(citizen_ids)
        )
    ).all()
    by_key: dict[tuple[int, int], list[int]] = {}
    for advisory_id, revision, citizen_id in rows:
        by_key.setdefault((advisory_id, revision), []).append(citizen_id)
    return {key: matching.sorted_unique(np.array(ids)) for key, ids in by_key.items()}
