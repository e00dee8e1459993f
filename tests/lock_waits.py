"""Waiting, in a race test on PostgreSQL, until another session waits on a row lock: the moment
the other side of the race must go on (pg_stat_activity shows it)."""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def until_one_waits_on_a_lock(
    opened: Callable[[], AbstractContextManager[Session | Connection]],
    *,
    why_not: Callable[[], object],
) -> None:
    """Until a session of the database waits on a lock; else fails after 20 s with
    `why_not()`. `opened`: a new session or connection each time,
    since one transaction reads pg_stat_activity once and keeps that reading."""
    for _ in range(400):
        with opened() as reading:
            if reading.scalar(_WAITING):
                return
        time.sleep(0.05)
    raise AssertionError(f"nobody waited on a lock: {why_not()}")
