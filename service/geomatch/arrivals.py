"""Asking those told ahead once they are there. A citizen whom an urgent advisory reached only
by a stay that had not begun, or before it was in effect, was warned without "are you safe?"
(alert.told_ahead). Each sweep looks at those rows of the advisories in effect: a citizen now
in reach (the trip began, they moved there, the advisory took effect) is asked, by the row
itself while it has never been tried, or else by a check-in request on each channel it went
on. A row once tried keeps its words (its reference finds a send whose outcome was lost)."""

from collections import defaultdict
from datetime import datetime

import numpy as np
from sqlalchemy import Select, select, text, tuple_, update
from sqlalchemy.orm import Session

from service.advisories.levels import asks_checkin
from service.advisories.models import AdvisoryRevision
from service.geo import matching
from service.geo.areas import Area
from service.geomatch import targets
from service.geomatch.places import load_reachable
from service.geomatch.targets import Live
from service.ledger import checkins, priority, states
from service.ledger.models import WAITING_SQL, Ahead, Alert

# Citizens whose places are read at a time (one IN list each).
_BATCH = 10_000
_WAITING = text(f"alert.{WAITING_SQL}")


def ask_arrivals(session: Session, lives: list[Live], areas: list[Area], *, now: datetime) -> int:
    """Ask "are you safe?" of the citizens told ahead by these advisories (the current revision
    of each that is in effect and asks) who are now in its reach. Returns how many citizens
    were asked. A row waits only until its citizen is asked (here, or by a staff round): the
    rows read each sweep are those of travellers not there yet."""
    in_effect = {
        live.id: (live, area)
        for live, area in zip(lives, areas, strict=True)
        if live.effective <= now
    }
    if not in_effect:
        return 0
    asking = _asking(session, {(live.id, live.revision) for live, _ in in_effect.values()})
    if not asking:
        return 0
    by_advisory: dict[int, list] = defaultdict(list)
    for row in session.execute(told_ahead(sorted({advisory_id for advisory_id, _ in asking}))):
        if (row.advisory_id, row.revision) in asking:  # the current revision's rows alone
            by_advisory[row.advisory_id].append(row)
    return _ask_those_there(session, in_effect, by_advisory, now=now)


def told_ahead(advisory_ids: list[int]) -> Select:
    """The rows of these advisories that told their citizen ahead and have not asked since:
    searched by advisory in the partial index ix_alert_told_ahead, which holds those rows
    alone. (A row-value IN on advisory and revision made SQLite scan the whole index.)"""
    return (
        select(Alert.id, Alert.advisory_id, Alert.revision, Alert.citizen_id, Alert.channel)
        .where(
            _WAITING,
            Alert.advisory_id.in_(advisory_ids),
            Alert.status.not_in((states.CANCELLED, states.SUPERSEDED)),
        )
        .order_by(Alert.advisory_id, Alert.citizen_id)
    )


def _ask_those_there(
    session: Session,
    in_effect: dict[int, tuple[Live, Area]],
    by_advisory: dict[int, list],
    *,
    now: datetime,
) -> int:
    """Ask those of these rows' citizens now in reach: a batch of citizens' places is read
    once and matched against each advisory that told some of them."""
    rows_of: dict[tuple[int, int], list] = defaultdict(list)
    for advisory_id, rows in by_advisory.items():
        for row in rows:
            rows_of[(advisory_id, row.citizen_id)].append(row)
    ids = sorted({citizen_id for _, citizen_id in rows_of})
    today = matching.Today.at(now)
    asked = 0
    for first in range(0, len(ids), _BATCH):
        batch = ids[first : first + _BATCH]
        reachable = load_reachable(session.connection(), today=today, citizen_ids=batch)
        for advisory_id in by_advisory:
            live, area = in_effect[advisory_id]
            told = np.array([cid for cid in batch if (advisory_id, cid) in rows_of], np.int64)
            if told.size == 0:
                continue
            target = targets.target(live, area, now=now)
            reached, ahead = matching.match_with_ahead(target, reachable.places, today=today)
            there = np.intersect1d(np.setdiff1d(reached, ahead, assume_unique=True), told)
            if live.exercise:  # a drill: only those still opted in
                there = reachable.opted_in(there)
            theirs = [row for cid in there.tolist() for row in rows_of[(advisory_id, cid)]]
            if theirs:
                asked += _ask(session, live, theirs, now=now)
    return asked


def _ask(session: Session, live: Live, rows: list, *, now: datetime) -> int:
    """Ask the citizens of these rows; returns how many were not asked before."""
    # Asked already by a request (a fallback written while a sweep marked the row it fell back
    # from can still wait): those rows are only marked.
    asked = set(
        session.scalars(
            select(Alert.citizen_id).where(
                Alert.citizen_id.in_({row.citizen_id for row in rows}),
                Alert.advisory_id == live.id,
                Alert.checkin_round > 0,
            )
        )
    )
    fresh = [row for row in rows if row.citizen_id not in asked]
    # Never tried yet: the row itself asks. Only a row still pending with no attempt changes
    # its words: one claimed is being sent, and one tried before may have reached the
    # provider, whose look-up goes by the reference of the words it sent (an ask would
    # change it: a duplicate SMS). Those get a request instead, below.
    carried = set(
        session.scalars(
            update(Alert)
            .where(
                Alert.id.in_([row.id for row in fresh]),
                _WAITING,
                Alert.status == states.PENDING,
                Alert.attempts == 0,
            )
            # ... and goes in the class of those there now (told ahead, it was a class later)
            .values(told_ahead=Ahead.NO, priority=priority.of_level(live.level))
            .returning(Alert.citizen_id)
            .execution_options(synchronize_session=False)
        )
    )
    later = [(row.citizen_id, row.channel, 1) for row in fresh if row.citizen_id not in carried]
    if later:
        checkins.enqueue_asks(
            session, advisory_id=live.id, revision=live.revision, asks=later, now=now
        )
    # Asked now, by one of their rows or by a request: none of their rows waits any longer,
    # and those that did not ask keep saying so (their words do not change).
    session.execute(
        update(Alert)
        .where(Alert.id.in_([row.id for row in rows]), _WAITING)
        .values(told_ahead=Ahead.ASKED)
        .execution_options(synchronize_session=False)
    )
    return len({row.citizen_id for row in fresh})


def _asking(session: Session, keys: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of these (advisory, revision), those whose alerts ask "are you safe?" (two fields of each
    revision's content: the rest may be a polygon of thousands of vertices)."""
    rows = session.execute(
        select(
            AdvisoryRevision.advisory_id,
            AdvisoryRevision.revision,
            AdvisoryRevision.content["level"].as_string(),
            AdvisoryRevision.content["severity"].as_string(),
        ).where(tuple_(AdvisoryRevision.advisory_id, AdvisoryRevision.revision).in_(sorted(keys)))
    ).all()
    return {
        (advisory_id, revision)
        for advisory_id, revision, level, severity in rows
        if asks_checkin(str(level), severity=severity or "")
    }
