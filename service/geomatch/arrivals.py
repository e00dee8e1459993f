"""Asking those told ahead once they are there. A citizen whom an urgent advisory reached only
by a stay that had not begun, or before it was in effect, was warned without "are you safe?"
(alert.ahead). Each sweep looks at those rows of the advisories in effect: a citizen now in
reach (the trip began, they moved there, the advisory took effect) is asked, by the row itself
while it waits to be sent, or else by a check-in request on each channel it went on."""

from collections import defaultdict
from datetime import datetime

import numpy as np
from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from service.advisories.levels import asks_checkin
from service.advisories.models import AdvisoryRevision
from service.geo import matching
from service.geo.areas import Area
from service.geomatch import targets
from service.geomatch.places import load_reachable
from service.geomatch.targets import Live
from service.ledger import checkins, states
from service.ledger.models import Alert

# Citizens whose places are read at a time (one IN list each).
_BATCH = 10_000


def ask_arrivals(session: Session, lives: list[Live], areas: list[Area], *, now: datetime) -> int:
    """Ask "are you safe?" of the citizens told ahead by these advisories (the current revision
    of each that is in effect and asks) who are now in its reach, unless a check-in round
    already asked them. Returns how many citizens were asked."""
    in_effect = {
        live.id: (live, area)
        for live, area in zip(lives, areas, strict=True)
        if live.effective <= now
    }
    if not in_effect:
        return 0
    told = session.execute(
        select(Alert.id, Alert.advisory_id, Alert.revision, Alert.citizen_id, Alert.channel)
        .where(Alert.ahead, Alert.advisory_id.in_(sorted(in_effect)))
        .order_by(Alert.advisory_id, Alert.citizen_id)
    ).all()
    told = [row for row in told if row.revision == in_effect[row.advisory_id][0].revision]
    if not told:
        return 0
    asking = _asking(session, {(row.advisory_id, row.revision) for row in told})
    by_advisory: dict[int, list] = defaultdict(list)
    for row in told:
        if (row.advisory_id, row.revision) in asking:
            by_advisory[row.advisory_id].append(row)
    asked = 0
    for advisory_id, rows in by_advisory.items():
        live, area = in_effect[advisory_id]
        asked += _ask_those_there(session, live, area, rows, now=now)
    return asked


def _ask_those_there(session: Session, live: Live, area: Area, rows: list, *, now: datetime) -> int:
    ids = sorted({row.citizen_id for row in rows})
    there: set[int] = set()
    target = targets.target(live, area, now=now)
    today = matching.day_number(now.date())
    for first in range(0, len(ids), _BATCH):
        batch = ids[first : first + _BATCH]
        rounds = set(
            session.scalars(
                select(Alert.citizen_id).where(
                    Alert.advisory_id == live.id,
                    Alert.checkin_round > 0,
                    Alert.citizen_id.in_(batch),
                )
            )
        )
        unasked = [cid for cid in batch if cid not in rounds]
        if not unasked:
            continue
        reachable = load_reachable(session.connection(), today=now.date(), citizen_ids=unasked)
        reached, ahead = matching.match_with_ahead(target, reachable.places, today=today)
        there.update(np.setdiff1d(reached, ahead, assume_unique=True).tolist())
    if not there:
        return 0
    theirs = [row for row in rows if row.citizen_id in there]
    # Not sent yet: the row itself asks. Only rows still queued change (one claimed before
    # this is being sent: a request follows it, below); never one whose last send may have
    # reached the provider: the look-up of its outcome goes by the reference of the words it
    # sent, which an ask would change (a duplicate SMS).
    carried = set(
        session.scalars(
            update(Alert)
            .where(
                Alert.id.in_([row.id for row in theirs]),
                Alert.ahead,
                Alert.status.in_(states.QUEUED),
                Alert.outcome_unknown.is_(False),
            )
            .values(ahead=False)
            .returning(Alert.citizen_id)
            .execution_options(synchronize_session=False)
        )
    )
    asks = [(row.citizen_id, row.channel, 1) for row in theirs if row.citizen_id not in carried]
    if asks:
        checkins.enqueue_asks(
            session, advisory_id=live.id, revision=live.revision, asks=asks, now=now
        )
    return len(there)


def _asking(session: Session, keys: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of these (advisory, revision), those whose alerts ask "are you safe?"."""
    rows = session.execute(
        select(
            AdvisoryRevision.advisory_id, AdvisoryRevision.revision, AdvisoryRevision.content
        ).where(tuple_(AdvisoryRevision.advisory_id, AdvisoryRevision.revision).in_(sorted(keys)))
    ).all()
    return {
        (advisory_id, revision)
        for advisory_id, revision, content in rows
        if asks_checkin(str(content.get("level")), severity=content.get("severity") or "")
    }
