"""db.wait_at_most: a write whose worth ends with a window (the dispatcher's mark before a
send) waits for others' locks only so long, then fails; every other transaction still waits
as long as before. On both backends, with real connections."""

import threading

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import make_engine, wait_at_most

TOUCH = text("UPDATE alert SET attempts = attempts WHERE id = -1")
# The holder lets go after this: long past the bounded write's wait, well within the
# unbounded one's (SQLite's busy_timeout is 10 s; PostgreSQL waits for ever).
HELD_S = 3.0


def _wait_setting(connection: Connection) -> str:
    if connection.dialect.name == "sqlite":
        return str(connection.exec_driver_sql("PRAGMA busy_timeout").scalar())
    return str(connection.execute(text("SHOW lock_timeout")).scalar())


def test_a_bounded_write_gives_up_on_a_held_lock_and_the_next_one_waits_as_before(
    engine: Engine, database_url: str
) -> None:
    # One pooled connection: the writes below and the check after use the same one.
    writer = make_engine(database_url, pool_size=1, max_overflow=0)
    with writer.connect() as connection:
        configured = _wait_setting(connection)
    holder = engine.connect()
    holder.begin()  # on SQLite BEGIN IMMEDIATE: the write lock
    if engine.dialect.name == "postgresql":
        holder.execute(text("LOCK TABLE alert IN EXCLUSIVE MODE"))
    release = threading.Timer(HELD_S, holder.rollback)
    release.start()
    try:
        bounded = None
        try:
            with Session(writer) as session, session.begin():
                wait_at_most(session, seconds=0.2)
                session.execute(TOUCH)
        except OperationalError as gave_up:
            bounded = gave_up
        # Without the bound it would have waited for the holder and written.
        assert bounded is not None
        # Unbounded: it waits for the holder to let go, and then writes.
        with Session(writer) as session, session.begin():
            session.execute(TOUCH)
    finally:
        release.join()
        holder.close()
    # The bound went with its transaction: the connection waits as configured again.
    with writer.connect() as connection:
        assert _wait_setting(connection) == configured
    writer.dispose()
