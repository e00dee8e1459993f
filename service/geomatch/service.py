"""Geomatching: at once for one advisory or one citizen, and as a sweep over everything.
New (advisory revision, citizen, channel) pairs go into the alert ledger in the caller's
transaction; the ledger's unique key makes any path running twice harmless."""

import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.models import Advisory
from service.dispatch.models import Alert
from service.geo import matching
from service.geo.areas import Area
from service.geomatch import targets
from service.geomatch.ledger import alert_rows, insert_alerts
from service.geomatch.places import Reachable, load_reachable
from service.geomatch.targets import Live


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
    started = time.perf_counter()
    reachable = load_reachable(
        session.connection(),
        today=now.date(),
        boxes=[box for area in areas for box in targets.boxes_of(area)],
        countries=sorted({code for area in areas for code in area.countries}),
    )
    result = _enqueue(session, lives, areas, reachable, now=now)
    result.load_s = time.perf_counter() - started - result.match_s - result.write_s
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


@dataclass
class Sweeper:
    """The scheduled sweep. It remembers which pairs it has enqueued (after commit), so that a
    steady-state sweep writes nothing; that memory only saves work: the ledger's key decides."""

    known: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def run(self, factory: sessionmaker[Session], *, now: datetime) -> MatchResult:
        """One sweep in one transaction."""
        pending = dict(self.known)
        with factory.begin() as session:
            started = time.perf_counter()
            reachable = load_reachable(session.connection(), today=now.date())
            lives = targets.live_advisories(session, now=now)
            areas = targets.areas_of(session, lives)
            load_s = time.perf_counter() - started
            result = _enqueue(session, lives, areas, reachable, now=now, known=pending)
            result.load_s = load_s
        live_keys = {(live.id, live.revision) for live in lives}
        self.known = {key: ids for key, ids in pending.items() if key in live_keys}
        return result


def cancel_pending_for(session: Session, *, citizen_id: int) -> int:
    """An erased citizen's alerts not yet sent are dropped."""
    result = session.execute(
        update(Alert)
        .where(Alert.citizen_id == citizen_id, Alert.status == "pending")
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def _enqueue(
    session: Session,
    lives: list[Live],
    areas: list[Area],
    reachable: Reachable,
    *,
    now: datetime,
    known: dict[tuple[int, int], np.ndarray] | None = None,
) -> MatchResult:
    result = MatchResult(advisories=len(lives))
    today = matching.day_number(now.date())
    rows: list[tuple[int, int, int, str]] = []
    fresh: dict[tuple[int, int], np.ndarray] = {}
    for live, area in zip(lives, areas, strict=True):
        started = time.perf_counter()
        ids = matching.match(targets.target(live, area, now=now), reachable.places, today=today)
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
        rows.extend(alert_rows(live.id, live.revision, sms_ids=sms_ids, email_ids=email_ids))
        fresh[key] = ids
    started = time.perf_counter()
    result.enqueued = insert_alerts(session.connection(), rows=rows, now=now)
    result.write_s = time.perf_counter() - started
    if known is not None:
        for key, ids in fresh.items():
            known[key] = np.union1d(known[key], ids)
    return result


def _enqueued_ids(session: Session, live: Live) -> np.ndarray:
    rows = session.execute(
        select(Alert.citizen_id)
        .where(Alert.advisory_id == live.id, Alert.revision == live.revision)
        .distinct()
    ).scalars()
    return np.unique(np.fromiter(rows, dtype=np.int64))
