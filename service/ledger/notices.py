"""Cancellation notices: an advisory's all-clear goes to whoever may have been told of it."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, select, text, tuple_, update
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.db import UTCDateTime
from service.ledger import priority, states
from service.ledger.enqueue import COLUMNS, ON_CONFLICT
from service.ledger.models import Alert
from service.ledger.outbox import Claimed
from service.ledger.wake import mark_enqueued

# Rows that may have reached the citizen (states.MAY_HAVE_REACHED_SQL); an all-clear goes to
# each. Run after the queued rows expired: one whose outcome is unknown still counts.
_ENQUEUE = text(
    f"INSERT INTO alert ({COLUMNS}) "  # noqa: S608 - constant text, values are bound
    "SELECT DISTINCT advisory_id, :revision, citizen_id, channel, :priority, "
    f"'{states.PENDING}', :now "
    "FROM alert WHERE advisory_id = :advisory_id AND revision < :revision "
    f"AND {states.MAY_HAVE_REACHED_SQL}{ON_CONFLICT}"
).bindparams(bindparam("now", type_=UTCDateTime()))


def enqueue_cancellation(
    session: Session, *, advisory_id: int, revision: int, now: datetime
) -> int:
    """Queue the cancellation (revision `revision`) to everyone told of an earlier revision, and
    stop what was not sent yet. Returns how many notices were queued."""
    level = session.scalar(select(Advisory.level).where(Advisory.id == advisory_id))
    session.execute(
        update(Alert)
        .where(
            Alert.advisory_id == advisory_id,
            Alert.revision < revision,
            Alert.status.in_(states.QUEUED),
        )
        .values(
            status=states.EXPIRED,
            # A row whose last try's outcome was lost may have gone: it must not read as never
            # sent (a probe counted 28 such warnings that had reached people).
            last_error=case(
                (
                    Alert.outcome_unknown,
                    f"{states.REASON_CANCELLED_BEFORE_SENDING} ({states.MAYBE_SENT})",
                ),
                else_=states.REASON_CANCELLED_BEFORE_SENDING,
            ),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        _ENQUEUE,
        {
            "advisory_id": advisory_id,
            "revision": revision,
            "now": now,
            "priority": priority.of_cancellation(level) if level else priority.DEFAULT,
        },
    )
    queued = result.rowcount or 0
    if queued:
        mark_enqueued(session)
    return queued


# What became of the warnings an all-clear follows, on either channel (warnings_behind).
WARNED = "warned"  # one may have reached the citizen: the all-clear goes
IN_FLIGHT = "in-flight"  # one is still queued or held by a dispatcher: the all-clear waits
NEVER_WARNED = "never-warned"  # every one ended unsent: the all-clear would puzzle them
REASON_NEVER_WARNED = "no warning reached the citizen before the cancellation"


@dataclass(frozen=True)
class Behind:
    """What became of the warnings an all-clear follows (EarlierAlerts.of)."""

    found: str  # WARNED, IN_FLIGHT or NEVER_WARNED
    # IN_FLIGHT: when the last of them comes due (a claim's lease end, a retry's time), by
    # which it will have settled; None: not known.
    until: datetime | None = None


# (status, outcome unknown, due) of one alert, as written or as its batch decided it.
Outcome = tuple[str, bool, datetime | None]


@dataclass(frozen=True)
class EarlierAlerts:
    """The earlier revisions' alerts to the citizens of a batch's all-clears (warnings_behind):
    (id, advisory, citizen, channel, revision, status, outcome unknown, due)."""

    rows: tuple[tuple[int, int, int, str, int, str, bool, datetime | None], ...] = ()

    def of(
        self,
        notice: Claimed,
        settled: Mapping[int, Outcome],
        *,
        now: datetime,
        settle_s: float = 0.0,
    ) -> Behind:
        """What became of the warnings `notice` follows: on its own channel first (it goes
        after the warning there, never beside it), then, when none went there, on the other:
        an all-clear on the other channel (the fallback of one that failed, one diverted while
        a circuit is open) follows a warning that went by the first (a review: one after a
        STOP was dropped as "never warned"). `settled`: outcomes of rows of the same batch
        already decided, not yet written (a warning ended unsent there is not in flight).
        `settle_s`: how long after a try of unknown outcome its provider may still make it."""
        settling_until = now + timedelta(seconds=settle_s)
        own = self._behind(notice, settled, notice.channel, now, settling_until)
        if own.found != NEVER_WARNED:
            return own
        return self._behind(notice, settled, None, now, settling_until)

    def _behind(
        self,
        notice: Claimed,
        settled: Mapping[int, Outcome],
        on: str | None,
        now: datetime,
        settling_until: datetime,
    ) -> Behind:
        whose = (notice.advisory_id, notice.citizen_id)
        earlier = [
            settled.get(alert_id, (status, unknown, due))
            for alert_id, advisory_id, citizen_id, channel, revision, status, unknown, due in (
                self.rows
            )
            if (advisory_id, citizen_id) == whose
            and revision < notice.revision
            and on in (None, channel)
        ]
        # A try whose outcome is unknown, its settle time not over (its row's due, kept when
        # the cancellation ended the row, within the settle time from now: one further off is
        # a backoff or a quiet night's hold, and says nothing of when the try was): the
        # provider may still make that warning, and a probe's came after the all-clear (8 of
        # 8). The all-clear waits it out.
        settling = [
            due
            for _, unknown, due in earlier
            if unknown and due is not None and now < due <= settling_until
        ]
        if settling:
            return Behind(IN_FLIGHT, max(settling))
        if any(
            status in (states.SENT, states.DELIVERED) or unknown for status, unknown, _ in earlier
        ):
            return Behind(WARNED)
        open_until = [due for status, _, due in earlier if status in states.OPEN]
        if open_until:
            known = [due for due in open_until if due is not None]
            return Behind(IN_FLIGHT, max(known) if len(known) == len(open_until) else None)
        return Behind(NEVER_WARNED)


def warnings_behind(session: Session, notices: list[Claimed]) -> EarlierAlerts:
    """The earlier revisions' alerts to the citizens of the all-clears in `notices`. An
    all-clear was queued for each citizen one of whose warnings was held by a dispatcher (it
    may have been on its way); that send may since have been given up (the dispatcher found the
    advisory cancelled), and the all-clear would then tell of a warning they never had."""
    if not notices:
        return EarlierAlerts()
    rows = session.execute(
        select(
            Alert.id,
            Alert.advisory_id,
            Alert.citizen_id,
            Alert.channel,
            Alert.revision,
            Alert.status,
            Alert.outcome_unknown,
            Alert.due_at,
        ).where(
            tuple_(Alert.advisory_id, Alert.citizen_id).in_(
                sorted({(n.advisory_id, n.citizen_id) for n in notices})
            )
        )
    ).all()
    return EarlierAlerts(tuple(tuple(row) for row in rows))
