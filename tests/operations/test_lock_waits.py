"""db.wait_at_most: a write whose worth ends with a window (the dispatcher's mark before a
send) waits for others' locks only so long, then fails; every other transaction still waits
as long as before. On both backends, with real connections."""

import threading

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import wait_at_most

TOUCH = text("UPDATE alert SET attempts = attempts WHERE id = -1")


def _hold_the_write_lock(engine: Engine):
    """A connection in a transaction that holds what TOUCH needs: on SQLite the write lock
    (BEGIN IMMEDIATE), on PostgreSQL the alert table."""
    holder = engine.connect()
    holder.begin()
    if engine.dialect.name == "postgresql":
        holder.execute(text("LOCK TABLE alert IN EXCLUSIVE MODE"))
    return holder


def test_a_bounded_write_gives_up_on_a_held_lock_and_the_next_one_waits_as_before(
    engine: Engine,
) -> None:
    holder = _hold_the_write_lock(engine)
    try:
        with pytest.raises(OperationalError), Session(engine) as session, session.begin():
            wait_at_most(session, seconds=0.2)
            session.execute(TOUCH)
        # Unbounded: it waits for the holder, released a moment later, and then writes.
        threading.Timer(0.5, holder.rollback).start()
        with Session(engine) as session, session.begin():
            session.execute(TOUCH)
    finally:
        holder.close()
    # The bound went with its transaction: pooled connections wait as configured.
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            waits = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert waits == 10_000
        else:
            assert connection.execute(text("SHOW lock_timeout")).scalar() == "0"
