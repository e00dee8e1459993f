"""The alert's states and the moves between them: the one home of the alert state machine.

    pending ──claim──► claimed ──send accepted──► sent ──report──► delivered | undelivered
       ▲                 │  │
       │                 │  └─transient failure──► retry_wait ──due──► claimed
       │                 └─permanent failure / out of tries──► failed
       └─staff retry── failed | undelivered | expired
    pending | retry_wait | claimed ──► expired (advisory ended or cancelled before sending)
                                   ──► superseded (a newer revision replaced it)
                                   ──► cancelled (citizen erased, advisory alerts nobody)

A state never moves back, except by a staff retry (TRANSITIONS lists every move). The outbox,
the dispatcher, delivery reports, cancellation notices and matching all ask this module.
"""

from typing import Final

PENDING: Final = "pending"
CLAIMED: Final = "claimed"
RETRY_WAIT: Final = "retry_wait"
SENT: Final = "sent"
DELIVERED: Final = "delivered"
UNDELIVERED: Final = "undelivered"
FAILED: Final = "failed"
EXPIRED: Final = "expired"
CANCELLED: Final = "cancelled"
SUPERSEDED: Final = "superseded"

ALL: Final = (
    PENDING,
    CLAIMED,
    RETRY_WAIT,
    SENT,
    DELIVERED,
    UNDELIVERED,
    FAILED,
    EXPIRED,
    CANCELLED,
    SUPERSEDED,
)
# Not yet settled: a dispatcher will (again) take these.
OPEN: Final = (PENDING, RETRY_WAIT, CLAIMED)
# Waiting in the queue, not held by any dispatcher.
QUEUED: Final = (PENDING, RETRY_WAIT)
# May have reached the citizen: an all-clear goes to each of these, and to any row whose
# last try's outcome is unknown (outcome_unknown: the provider may hold the message, whatever
# became of the row since, e.g. expired by the cancellation itself). See MAY_HAVE_REACHED_SQL.
MAY_HAVE_REACHED: Final = (CLAIMED, SENT, DELIVERED)
# Ended without reaching the citizen, and a delivery report cannot change that.
ENDED_UNSENT: Final = (FAILED, EXPIRED, CANCELLED, SUPERSEDED)
# Ended before it was sent, by design rather than by failing: a newer revision's row took its
# place (or none did: the area no longer holds the citizen), the citizen erased their record,
# the advisory ended or was cancelled. Not an ask that failed, nor one that reached anyone.
WITHDRAWN: Final = (EXPIRED, CANCELLED, SUPERSEDED)
# What staff may put back in the queue.
RETRYABLE: Final = (FAILED, UNDELIVERED, EXPIRED)
# How a claimed row may end, as the dispatcher decides it.
DECISIONS: Final = (SENT, RETRY_WAIT, FAILED, EXPIRED, CANCELLED, SUPERSEDED)

# How far along each state is; a report that would move an alert back is ignored.
PROGRESS: Final = {
    PENDING: 0,
    RETRY_WAIT: 0,
    CLAIMED: 1,
    SENT: 2,
    DELIVERED: 3,
    UNDELIVERED: 3,
    FAILED: 3,
    EXPIRED: 3,
    CANCELLED: 3,
    SUPERSEDED: 3,
}

# Delivery reports may overtake the dispatcher's own record of a send (claimed), and may
# settle a send whose outcome was unknown (retry_wait); a pending row has no send to report on.
TRANSITIONS: Final = {
    PENDING: {CLAIMED, EXPIRED, CANCELLED},
    RETRY_WAIT: {CLAIMED, EXPIRED, CANCELLED, SENT, DELIVERED, UNDELIVERED},
    CLAIMED: {
        CLAIMED,
        SENT,
        RETRY_WAIT,
        FAILED,
        EXPIRED,
        CANCELLED,
        SUPERSEDED,
        DELIVERED,
        UNDELIVERED,
    },
    SENT: {DELIVERED, UNDELIVERED},
    DELIVERED: set(),
    UNDELIVERED: {PENDING},
    FAILED: {PENDING},
    EXPIRED: {PENDING},
    CANCELLED: set(),
    SUPERSEDED: set(),
}


def allowed(current: str, target: str) -> bool:
    """Whether an alert in `current` may move to `target` (a claim may be taken over)."""
    return target in TRANSITIONS[current]


def status_in(states: tuple[str, ...]) -> str:
    """`status IN (...)` for raw SQL, from the tuples above."""
    return "status IN (" + ", ".join(f"'{s}'" for s in states) + ")"


# The open rows are one stored column the database derives from status (alert.is_open). The
# claim's partial index covers them through it, so no index names `status` and a claim
# (pending -> claimed, both open) can be a HOT update on PostgreSQL.
OPEN_COLUMN: Final = "is_open"


def sql_in(states: tuple[str, ...]) -> str:
    """The condition for rows in these states, spelled as the partial indexes spell it (the
    open states: the stored column above), for raw SQL."""
    return OPEN_COLUMN if states == OPEN else status_in(states)


# Rows that may have reached the citizen, for raw SQL (see MAY_HAVE_REACHED). A probe's
# Twilio took 13 warnings whose answers were lost; staff cancelled while those rows waited to
# be looked up, and the 13 got no all-clear.
MAY_HAVE_REACHED_SQL: Final = f"({status_in(MAY_HAVE_REACHED)} OR outcome_unknown)"


# The error code of a row failed unsent because its contact is sealed under a data secret
# this process does not list: a reseal that leaves nothing unreadable queues these again.
CODE_UNREADABLE: Final = "unreadable"
# The error code of a row failed unsent because preparing its message raised (a fault in the
# dispatcher, logged): the rest of its batch goes, and staff may retry it once mended.
CODE_UNPREPARED: Final = "unprepared"

# Reasons recorded with a row that ends without a send (last_error).
REASON_CANCELLED_BEFORE_SENDING: Final = "advisory cancelled before this was sent"
REASON_ENDED_BEFORE_SENDING: Final = "advisory ended before this was sent"
# Added to the reason a row ended unsent when its last try's outcome was lost
# (outcome_unknown): the provider may have taken it, and the citizen gets the all-clear.
MAYBE_SENT: Final = "but an earlier try's outcome was lost: it may have been sent"
REASON_CITIZEN_ERASED: Final = "citizen erased"
REASON_ALERTS_NOBODY: Final = "advisory does not alert citizens"
