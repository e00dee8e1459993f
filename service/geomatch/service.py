"""Geomatching: at once for one advisory or one citizen, and as a sweep over everything.
New (advisory revision, citizen, channel) pairs go into the alert ledger in the caller's
transaction; the ledger's unique key makes any path running twice harmless."""

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.models import Advisory
from service.dispatch.models import Alert
from service.geo import matching
from service.geo.areas import area_from_json
from service.geomatch.ledger import insert_alerts
from service.geomatch.places import Reachable, load_reachable


@dataclass
class MatchResult:
    matched: int = 0  # (advisory, citizen) pairs in reach now
    enqueued: int = 0  # new alert rows
    advisories: int = 0


def target_of(advisory: Advisory, *, now: datetime) -> matching.Target:
    expires = advisory.expires
    return matching.Target(
        key=advisory.id,
        area=area_from_json(advisory.area),
        start_day=matching.day_number(advisory.effective.date()),
        end_day=matching.day_number(expires.date()) if expires else matching.FOREVER,
        active_now=advisory.effective <= now and (expires is None or expires > now),
    )


def alerting(advisory: Advisory, *, now: datetime) -> bool:
    """Whether an advisory may enqueue alerts at all."""
    return (
        advisory.status == "active"
        and advisory.alerts_citizens
        and (advisory.expires is None or advisory.expires > now)
    )


def match_citizen(session: Session, *, citizen_id: int, now: datetime) -> MatchResult:
    """Enqueue what the active advisories say to one citizen who registered or moved."""
    session.flush()
    reachable = load_reachable(session.connection(), today=now.date(), citizen_id=citizen_id)
    if len(reachable.places) == 0:
        return MatchResult()
    advisories = _active_advisories(session, now=now)
    return _enqueue(session, advisories, reachable, now=now)


def match_advisories(session: Session, *, advisories: list[Advisory], now: datetime) -> MatchResult:
    """Enqueue everyone new or revised advisories reach (one read of the places for all)."""
    live = [a for a in advisories if alerting(a, now=now)]
    if not live:
        return MatchResult()
    session.flush()
    reachable = load_reachable(session.connection(), today=now.date())
    return _enqueue(session, live, reachable, now=now)


@dataclass
class Sweeper:
    """The scheduled sweep. It remembers which pairs it has enqueued (after commit), so that a
    steady-state sweep writes nothing; that memory only saves work: the ledger's key decides."""

    known: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def run(self, factory: sessionmaker[Session], *, now: datetime) -> MatchResult:
        """One sweep in one transaction."""
        pending = {key: ids.copy() for key, ids in self.known.items()}
        with factory.begin() as session:
            reachable = load_reachable(session.connection(), today=now.date())
            advisories = _active_advisories(session, now=now)
            result = _enqueue(session, advisories, reachable, now=now, known=pending)
            live = {(a.id, a.revision) for a in advisories}
        self.known = {key: ids for key, ids in pending.items() if key in live}
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


def _active_advisories(session: Session, *, now: datetime) -> list[Advisory]:
    candidates = session.scalars(
        select(Advisory).where(Advisory.status == "active", Advisory.alerts_citizens.is_(True))
    )
    return [a for a in candidates if alerting(a, now=now)]


def _enqueue(
    session: Session,
    advisories: list[Advisory],
    reachable: Reachable,
    *,
    now: datetime,
    known: dict[tuple[int, int], np.ndarray] | None = None,
) -> MatchResult:
    result = MatchResult(advisories=len(advisories))
    today = matching.day_number(now.date())
    connection = session.connection()
    for advisory in advisories:
        ids = matching.match(target_of(advisory, now=now), reachable.places, today=today)
        result.matched += len(ids)
        key = (advisory.id, advisory.revision)
        if known is not None:
            if key not in known:
                known[key] = _enqueued_ids(session, advisory)
            new = ids[~np.isin(ids, known[key], assume_unique=True)]
        else:
            new = ids
        if new.size == 0:
            continue
        sms_ids, email_ids = reachable.channels_of(new)
        result.enqueued += insert_alerts(
            connection,
            advisory_id=advisory.id,
            revision=advisory.revision,
            sms_ids=sms_ids,
            email_ids=email_ids,
            now=now,
        )
        if known is not None:
            known[key] = np.union1d(known[key], new)
    return result


def _enqueued_ids(session: Session, advisory: Advisory) -> np.ndarray:
    rows = session.execute(
        select(Alert.citizen_id)
        .where(Alert.advisory_id == advisory.id, Alert.revision == advisory.revision)
        .distinct()
    ).scalars()
    return np.unique(np.fromiter(rows, dtype=np.int64))
