"""The dispatcher's reads and writes on the alert ledger: claim due rows under a lease, and
record what happened to them. Each call is one short transaction of the caller's; no
transaction is ever held open across a send."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    CompoundSelect,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.dml import ReturningUpdate

from service import db
from service.advisories.models import Advisory
from service.citizens.models import Citizen
from service.db import UTCDateTime
from service.ledger import priority, states
from service.ledger.models import ERROR_CODE_LENGTH, Alert, stored_provider_ref
from service.privacy import scrub_contacts

# Literal SQL, the same text as the partial index ix_alert_open_priority: with bound parameters
# SQLite does not see that the index applies and scans the whole ledger (0.95 s a claim at 5M
# rows with 20k open, against 0.5 ms).
_OPEN = text(states.sql_in(states.OPEN))


@dataclass(frozen=True)
class Claimed:
    id: int
    advisory_id: int
    revision: int
    citizen_id: int
    channel: str
    attempts: int  # tries since the row was (re-)queued: what the retry budget counts
    outcome_unknown: bool
    created_at: datetime
    attempt: int  # this send's own number, never reused: delivery reports name it
    priority: int  # its urgency class: a fallback on the other channel keeps it
    checkin_round: int = 0  # n >= 1: an "are you safe?" request rather than the advisory
    told_ahead: int = 0  # models.Ahead: not NO, its words do not ask (told ahead of a stay)


# The claim's statements, built once (a claim runs every batch); every value is bound.
_NOW = bindparam("now", type_=UTCDateTime())
_DUE = (
    Alert.channel == bindparam("of_channel"),
    _OPEN,
    or_(Alert.due_at.is_(None), Alert.due_at <= _NOW),
)
# The oldest few due rows of each class, through the claim's index; then the oldest of those.
# A range on the class, not `priority = cls`: ordered by (priority, id), which only the claim's
# index gives. With an equality PostgreSQL may walk the primary key instead, filtering, while
# its statistics still see every row open (a burst being drained: 71 ms a claim at 50k sent).
_HEADS = union_all(
    *(
        select(
            select(Alert.id)
            .where(*_DUE, Alert.priority.between(cls, cls))
            .order_by(Alert.priority, Alert.id)
            .limit(bindparam("share"))
            .subquery()
            .c.id
        )
        for cls in priority.CLASSES
    )
).subquery()
_OLDEST = select(_HEADS.c.id).order_by(_HEADS.c.id).limit(bindparam("share"))
# Several dispatchers on PostgreSQL share the queue: rows another one is claiming are skipped.
# SQLite has one writer anyway.
_BY_CLASS = (
    select(Alert.id)
    .where(*_DUE)
    .order_by(Alert.priority, Alert.id)
    .limit(bindparam("rest"))
    .with_for_update(skip_locked=True)
)
_BY_CLASS_BUT_OLDEST = _BY_CLASS.where(Alert.id.not_in(bindparam("oldest", expanding=True)))
# The oldest rows read first are checked again here, under the lock.
_OLDEST_STILL_DUE = (
    select(Alert.id)
    .where(Alert.id.in_(bindparam("oldest", expanding=True)), *_DUE)
    .with_for_update(skip_locked=True)
)


def _claim(picked: Select | CompoundSelect) -> ReturningUpdate:
    return (
        update(Alert)
        .where(Alert.id.in_(picked))
        .values(
            status=states.CLAIMED,
            attempts=Alert.attempts + 1,
            due_at=bindparam("lease_end", type_=UTCDateTime()),
            # Due now: what an earlier claim may have sent has settled, its mark goes.
            settles_at=None,
            claimed_by=bindparam("worker"),
            outcome_unknown=case(
                (Alert.status == states.CLAIMED, True), else_=Alert.outcome_unknown
            ),
            updated_at=_NOW,
        )
        .returning(
            Alert.id,
            Alert.advisory_id,
            Alert.revision,
            Alert.citizen_id,
            Alert.channel,
            Alert.attempts - Alert.retry_base,
            Alert.outcome_unknown,
            Alert.created_at,
            Alert.attempts,
            Alert.priority,
            Alert.checkin_round,
            Alert.told_ahead,
        )
        .execution_options(synchronize_session=False)
    )


_CLAIM_BY_CLASS = _claim(select(_BY_CLASS.subquery().c.id))
_CLAIM_URGENT = _claim(select(_BY_CLASS.where(Alert.priority.in_(priority.URGENT)).subquery().c.id))
_CLAIM_OLDEST_AND_BY_CLASS = _claim(
    union_all(
        select(_OLDEST_STILL_DUE.subquery().c.id),
        select(_BY_CLASS_BUT_OLDEST.subquery().c.id),
    )
)


# A transaction of the dispatcher's is a few statements with no wait between them.
_IDLE_FLOOR_S = 5.0


def bound_idle(session: Session, *, lease_s: float) -> None:
    """A dispatcher's transaction ends on the server once idle for longer than a lease (and
    _IDLE_FLOOR_S): one paused or frozen inside a claim or a record must not keep its rows
    locked, hidden from every other dispatcher, for as long as the pause lasts (db.bound_idle).
    Woken, it finds its write refused, as in a database outage, and its claims gone (fencing)."""
    db.bound_idle(session, seconds=max(lease_s, _IDLE_FLOOR_S))


def claim(
    session: Session,
    *,
    channel: str,
    now: datetime,
    limit: int,
    lease_s: float,
    worker: str,
    urgent_only: bool = False,
) -> list[Claimed]:
    """Take up to `limit` due rows of a channel until now + lease_s: the most urgent class
    first, then the oldest, except a share of the batch (priority.oldest_share) that goes to
    the oldest due rows whatever their class, so that no class waits forever. Returned most
    urgent first. A claimed row whose lease lapsed (its dispatcher died) is due again, and its
    outcome is unknown. `urgent_only`: the urgent classes alone (priority.URGENT)."""
    values = {
        "of_channel": channel,
        "now": now,
        "lease_end": now + timedelta(seconds=lease_s),
        "worker": worker,
    }
    share = 0 if urgent_only else priority.oldest_share(limit)
    oldest = list(session.scalars(_OLDEST, {**values, "share": share})) if share else []
    if oldest:
        statement = _CLAIM_OLDEST_AND_BY_CLASS
        values |= {"oldest": oldest, "rest": limit - len(oldest)}
    else:
        statement = _CLAIM_URGENT if urgent_only else _CLAIM_BY_CLASS
        values["rest"] = limit
    rows = session.execute(statement, values).all()
    return sorted((Claimed(*row) for row in rows), key=lambda c: (c.priority, c.id))


@dataclass(frozen=True)
class Decision:
    """What became of one claimed row."""

    alert_id: int
    status: str  # one of states.DECISIONS
    provider_ref: str | None = None
    segments: int | None = None
    code: str | None = None
    reason: str | None = None
    due_at: datetime | None = None
    outcome_unknown: bool = False
    # The row was held, not tried (quiet hours): the claim's attempt does not count against
    # the retry budget.
    refund: bool = False
    # The provider refused the address as opted out: the keyed hash of the number it refused,
    # for the caller to keep as that number's STOP (the ledger stores only the row's outcome).
    opted_out_hash: str | None = None
    opted_out_since: datetime | None = None  # when the refused send began


# error_code of a row held for the citizen's quiet hours (retry_wait until they end).
QUIET_HOURS = "quiet-hours"


_RECORD_SENT = text(
    f"UPDATE alert SET status = CASE WHEN status = '{states.CLAIMED}' THEN '{states.SENT}' "  # noqa: S608
    "ELSE status END, "
    "provider_ref = COALESCE(provider_ref, :provider_ref), segments = :segments, "
    "sent_at = :now, due_at = NULL, outcome_unknown = false, error_code = NULL, "
    "updated_at = :now WHERE id = :alert_id AND claimed_by = :worker AND attempts = :attempt"
).bindparams(bindparam("now", type_=UTCDateTime()))
# PostgreSQL: one statement for the whole stretch instead of a statement per row.
_RECORD_SENT_POSTGRESQL = text(
    f"UPDATE alert SET status = CASE WHEN alert.status = '{states.CLAIMED}' "  # noqa: S608
    f"THEN '{states.SENT}' "
    "ELSE alert.status END, provider_ref = COALESCE(alert.provider_ref, v.ref), "
    "segments = v.seg, sent_at = :now, due_at = NULL, outcome_unknown = false, "
    "error_code = NULL, updated_at = :now "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:refs AS text[]), CAST(:segs AS int[]), "
    "CAST(:attempts AS int[])) AS v(id, ref, seg, attempt) "
    "WHERE alert.id = v.id AND alert.claimed_by = :worker AND alert.attempts = v.attempt"
).bindparams(bindparam("now", type_=UTCDateTime()))
_RECORD_OTHER = text(
    "UPDATE alert SET status = :status, due_at = :due_at, error_code = :code, "  # noqa: S608
    "last_error = :reason, outcome_unknown = :outcome_unknown, segments = :segments, "
    "retry_base = retry_base + :refund, "
    "updated_at = :now WHERE id = :alert_id AND claimed_by = :worker "
    f"AND attempts = :attempt AND status = '{states.CLAIMED}'"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("due_at", type_=UTCDateTime()))


def record(
    session: Session,
    *,
    decided: list[tuple[Claimed, Decision]],
    worker: str,
    now: datetime,
) -> None:
    """Write the outcomes of one stretch of sends. Only rows this worker still holds under the
    same claim change: the claim's attempt number is its fencing token, so a dispatcher that was
    paused past its lease cannot record over the claim that replaced its own, even its own
    later one. A status callback that came first is kept (a state never moves back)."""
    sent = [
        {
            "alert_id": d.alert_id,
            "provider_ref": stored_provider_ref(d.provider_ref),
            "segments": d.segments,
            "attempt": row.attempt,
        }
        for row, d in decided
        if d.status == states.SENT
    ]
    other = [
        {
            "alert_id": d.alert_id,
            "attempt": row.attempt,
            "status": d.status,
            "due_at": d.due_at,
            "code": d.code[:ERROR_CODE_LENGTH] if d.code else d.code,
            "reason": scrub_contacts(d.reason),
            "outcome_unknown": d.outcome_unknown,
            "segments": d.segments,
            "refund": int(d.refund),
        }
        for row, d in decided
        if d.status != states.SENT
    ]
    common = {"worker": worker, "now": now}
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        # A record lost to a database crash leaves its rows claimed: they lapse and are looked
        # up, as after a dispatcher crash. So outcomes need not wait for the WAL flush. (Claims
        # must: a lost claim would make a sent row look untried.)
        session.execute(text("SET LOCAL synchronous_commit = off"))
    if sent and postgresql:
        session.execute(
            _RECORD_SENT_POSTGRESQL,
            {
                "ids": [row["alert_id"] for row in sent],
                "refs": [row["provider_ref"] for row in sent],
                "segs": [row["segments"] for row in sent],
                "attempts": [row["attempt"] for row in sent],
                **common,
            },
        )
    elif sent:
        session.execute(_RECORD_SENT, [{**row, **common} for row in sent])
    if other:
        session.execute(_RECORD_OTHER, [{**row, **common} for row in other])


def _later_of(a: str, b: str) -> str:
    """SQL for the later of two times, `b` when `a` is NULL. A row comes due at its lease end,
    or once a send of it that may be under way has settled, whichever is later (mark_sending):
    the one home of that rule, for renew, mark_sending and release."""
    return f"CASE WHEN {a} > {b} THEN {a} ELSE {b} END"


_RENEW = text(
    f"UPDATE alert SET due_at = {_later_of('settles_at', ':lease_end')} "  # noqa: S608
    f"WHERE id IN :ids AND claimed_by = :worker AND status = '{states.CLAIMED}' "
    "RETURNING id, attempts"
).bindparams(bindparam("ids", expanding=True), bindparam("lease_end", type_=UTCDateTime()))
_MARK_SENDING = text(
    "UPDATE alert SET settles_at = :settles_at, "  # noqa: S608
    f"due_at = {_later_of('due_at', ':settles_at')} "
    f"WHERE id IN :ids AND claimed_by = :worker AND status = '{states.CLAIMED}' "
    "RETURNING id, attempts"
).bindparams(bindparam("ids", expanding=True), bindparam("settles_at", type_=UTCDateTime()))


def mark_sending(
    session: Session, *, held: dict[int, int], worker: str, settles_at: datetime
) -> set[int]:
    """Before their sends begin: these rows (id -> the claim's attempt) may be under way until
    `settles_at`, the latest a send begun now can be made by the provider and found by a
    look-up. Until then no other claim takes them, neither when their lease lapses nor when
    their dead dispatcher is taken back (release): a probe killed a dispatcher with sends in
    flight to a Twilio that made them 6 s late; the restarted one looked them up at once,
    found nothing, and sent 8 of 200 twice. Returns the ids still held under the same claim."""
    if not held:
        return set()
    # Flushed before the send (synchronous_commit stays on): a mark lost to a database crash
    # after the send began would let a claim after the restart look the send up too soon.
    rows = session.execute(
        _MARK_SENDING, {"ids": list(held), "worker": worker, "settles_at": settles_at}
    )
    return {alert_id for alert_id, attempts in rows if held.get(alert_id) == attempts}


def renew(session: Session, *, held: dict[int, int], worker: str, lease_end: datetime) -> set[int]:
    """Extend the leases of the rows this worker still holds (id -> the claim's attempt) to
    `lease_end`; returns the ids still held under the same claim. The rows are named, so the
    primary key finds them: no index on claimed_by is needed."""
    if not held:
        return set()
    rows = session.execute(_RENEW, {"ids": list(held), "worker": worker, "lease_end": lease_end})
    return {alert_id for alert_id, attempts in rows if held.get(alert_id) == attempts}


def claimed_again(session: Session, *, held: dict[int, int]) -> set[int]:
    """Of these rows (id -> the attempt of a claim they were held under), those claimed again
    since: its lease lapsed and another claim, another dispatcher's most often, took them. A
    row recorded under that claim keeps its attempt number."""
    if not held:
        return set()
    rows = session.execute(select(Alert.id, Alert.attempts).where(Alert.id.in_(list(held))))
    return {alert_id for alert_id, attempts in rows if attempts != held[alert_id]}


def overtaken(session: Session, *, ids: Iterable[int], now: datetime) -> set[int]:
    """Of these held rows, those that must not be sent any more: their advisory moved past
    their revision (revised, or cancelled: the all-clear is the newer revision) or ended, or
    their citizen was erased. A probe cancelled a level 3 after 16 warnings of a claimed batch,
    and 84 more went out, some after the all-clear; an erased citizen's went out too; another
    probe's warnings went out after their advisory's end. The heartbeat stops them
    (Holdings.may_send); whoever claims them once the lease lapses ends them."""
    ids = list(ids)
    if not ids:
        return set()
    # A cancelled advisory's own rows are its all-clears, which go whatever its end.
    ended = and_(
        Advisory.status != "cancelled",
        or_(
            Advisory.status == "expired",
            and_(Advisory.expires.is_not(None), Advisory.expires <= now),
        ),
    )
    return set(
        session.scalars(
            select(Alert.id)
            .join(Advisory, Advisory.id == Alert.advisory_id)
            .join(Citizen, Citizen.id == Alert.citizen_id)
            .where(Alert.id.in_(ids))
            .where(or_(Alert.revision < Advisory.revision, Citizen.status == "erased", ended))
        )
    )


def release(session: Session, *, worker: str, now: datetime) -> int:
    """Put the rows a dead (or stopping) worker still holds back in the queue now, instead of
    when their lease lapses; a row whose send may be under way once it has settled
    (mark_sending). Their outcome is unknown: the next claim looks them up first."""
    result = session.execute(_RELEASE, {"worker": worker, "now": now})
    return result.rowcount or 0


_RELEASE = text(
    f"UPDATE alert SET due_at = {_later_of('settles_at', ':now')} "  # noqa: S608
    f"WHERE {states.sql_in(states.OPEN)} AND status = '{states.CLAIMED}' "
    "AND claimed_by = :worker"
).bindparams(bindparam("now", type_=UTCDateTime()))


def enqueue_fallback(
    session: Session, *, failed: Claimed | Alert, channel: str, now: datetime
) -> bool:
    """Queue the same advisory revision on the citizen's other channel, unless it is queued:
    after a claimed row failed, or a sent row's delivery report said undelivered."""
    values = {
        "advisory_id": failed.advisory_id,
        "revision": failed.revision,
        "citizen_id": failed.citizen_id,
        "channel": channel,
        "status": states.PENDING,
        "created_at": now,
        "priority": failed.priority,
        "fallback_of": failed.id,
        "checkin_round": failed.checkin_round,
        # As the row stands now, not as claimed: its citizen may have been asked since.
        "told_ahead": select(Alert.told_ahead).where(Alert.id == failed.id).scalar_subquery(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    result = session.execute(dialect.insert(Alert).values(values).on_conflict_do_nothing())
    return bool(result.rowcount)


def open_count(session: Session) -> int:
    """Alerts not yet settled: pending, waiting to retry, or claimed."""
    return session.scalar(select(func.count()).select_from(Alert).where(_OPEN)) or 0


def _queued_again(now: datetime, due_at: datetime | None = None) -> dict[str, object]:
    """A row ended unsent, queued again with a fresh retry budget, due at `due_at` (None: now)."""
    return {
        "status": states.PENDING,
        "retry_base": Alert.attempts,
        "due_at": due_at,
        "claimed_by": None,
        "provider_ref": None,
        "updated_at": now,
    }


def requeue(
    session: Session, *, alert_id: int, now: datetime, due_at: datetime | None = None
) -> bool:
    """Staff put an alert that ended unsent back in the queue, with a fresh retry budget. Its
    old provider reference goes: a late report on the old message must not settle the new one
    (reports carry their attempt's number, which a new send never reuses). Whether its last try
    may have gone out stays: the dispatcher looks that try up before sending again (a probe's
    retry sent a second SMS of one the provider had)."""
    result = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status.in_(states.RETRYABLE))
        .values(_queued_again(now, due_at))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def requeue_unreadable(
    session: Session, *, after_id: int, span: int, created_since: datetime, now: datetime
) -> tuple[int | None, int]:
    """Alerts with ids in (after_id, after_id + span] that failed unsent because no listed
    data secret opened their contact, back in the queue as a staff retry puts them (one whose
    last try may have gone is looked up first). By id ranges, no index: a rare recovery must
    not cost every bulk write an index. Left to staff (a review): a check-in round's question
    (the citizen may have answered since), a row made before `created_since` (its check-in
    link has lapsed), a fallback, and a row whose fallback on the other channel may have
    reached the citizen. Not a row of an erased citizen (the dispatcher would cancel it).
    Returns the last id looked at (None past the last alert) and how many went back."""
    last = session.scalar(select(func.max(Alert.id)))
    if last is None or after_id >= last:
        return None, 0
    fallback = aliased(Alert)
    reached_otherwise = (
        select(fallback.id)
        .where(
            # The ledger's unique key finds the other channel's row of the same alert.
            fallback.advisory_id == Alert.advisory_id,
            fallback.revision == Alert.revision,
            fallback.citizen_id == Alert.citizen_id,
            fallback.channel != Alert.channel,
            fallback.checkin_round == Alert.checkin_round,
            fallback.fallback_of == Alert.id,
            or_(fallback.status.in_(states.MAY_HAVE_REACHED), fallback.outcome_unknown),
        )
        .exists()
    )
    result = session.execute(
        update(Alert)
        .where(
            Alert.id > after_id,
            Alert.id <= after_id + span,
            Alert.status == states.FAILED,
            Alert.error_code == states.CODE_UNREADABLE,
            Alert.checkin_round == 0,
            Alert.created_at >= created_since,
            Alert.fallback_of.is_(None),
            ~reached_otherwise,
            ~select(Citizen.id)
            .where(Citizen.id == Alert.citizen_id, Citizen.status == "erased")
            .exists(),
        )
        .values(_queued_again(now))
        .execution_options(synchronize_session=False)
    )
    return min(after_id + span, last), result.rowcount or 0


def forget_citizen(session: Session, *, citizen_id: int, now: datetime) -> int:
    """Erasure: the citizen's alerts still waiting are dropped, and no provider text about
    them is kept (it may quote their contact), nor the provider's id of what was sent (it finds
    the message, their number in it, in the provider's own log). A claimed alert keeps its id
    until it ends: a send under way writes it. Returns how many were dropped."""
    result = session.execute(
        update(Alert)
        .where(Alert.citizen_id == citizen_id, Alert.status.in_(states.QUEUED))
        .values(status=states.CANCELLED, last_error=states.REASON_CITIZEN_ERASED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Alert)
        .where(Alert.citizen_id == citizen_id)
        .where(or_(Alert.last_error.is_not(None), Alert.provider_ref.is_not(None)))
        .values(
            last_error=case(
                (Alert.last_error == states.REASON_CITIZEN_ERASED, Alert.last_error), else_=None
            ),
            provider_ref=case((Alert.status == states.CLAIMED, Alert.provider_ref), else_=None),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def forget_refs_of_erased(session: Session, *, erased_since: datetime) -> int:
    """The provider's message ids and failure reasons written after a citizen's erasure (a
    send in hand when they erased, recorded afterwards: a review found its refusal kept) go
    too, as the erasure took those before it; the purge job runs this every hour."""
    erased = select(Citizen.id).where(Citizen.status == "erased", Citizen.erased_at >= erased_since)
    result = session.execute(
        update(Alert)
        .where(Alert.status != states.CLAIMED)
        .where(
            or_(
                Alert.provider_ref.is_not(None),
                and_(
                    Alert.last_error.is_not(None),
                    Alert.last_error != states.REASON_CITIZEN_ERASED,
                ),
            )
        )
        .where(Alert.citizen_id.in_(erased))
        .values(
            provider_ref=None,
            last_error=case(
                (Alert.last_error == states.REASON_CITIZEN_ERASED, Alert.last_error), else_=None
            ),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def sent_since(
    session: Session, *, citizen_ids: set[int], since: datetime
) -> dict[tuple[int, int, int], int]:
    """How many alerts each of these citizens was sent since `since` (any channel), by
    (citizen id, advisory id, revision): the caller knows which revisions are routine."""
    if not citizen_ids:
        return {}
    rows = session.execute(
        select(Alert.citizen_id, Alert.advisory_id, Alert.revision, func.count())
        .where(
            Alert.citizen_id.in_(citizen_ids),
            Alert.sent_at >= since,
            # Asks that went first are never held, nor counted (priority.of_roll_call).
            or_(Alert.checkin_round == 0, Alert.priority != priority.CHECK_IN),
        )
        .group_by(Alert.citizen_id, Alert.advisory_id, Alert.revision)
    )
    return {(citizen, advisory, revision): count for citizen, advisory, revision, count in rows}
