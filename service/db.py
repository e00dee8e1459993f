"""Engine, session factory and the declarative base shared by every domain's models, and the
bounds on how long anything waits for the database (docs/faults.md#database-outage)."""

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InvalidatePoolError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from service.errors import ServiceUnavailable
from service.socket_watchdog import SocketWatchdog

log = logging.getLogger("anjeon.db")

# Named constraints: Alembic's batch mode on SQLite can only alter what has a name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on both backends (SQLite drops the zone; we store UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


# The largest integer either backend stores in a BIGINT or takes as an OFFSET: routers cap ids
# and offsets here, so a larger one is invalid input, not a driver's OverflowError.
MAX_BIGINT = 2**63 - 1

# Execution option for a transaction that only reads: on SQLite it then waits for no writer.
READ_ONLY = "anjeon_read_only"
# Execution option: seconds a write transaction waits for SQLite's write lock (see wait_at_most).
LOCK_WAIT_S = "anjeon_lock_wait_s"


def flush_write_ahead_log(engine: Engine) -> None:
    """SQLite: copies the write-ahead log into the database and empties it, so the page images
    it held from before an erasure are gone too. Best effort, after the commit (a reader still
    in the log keeps it; the next checkpoint ends it). Nothing to do on PostgreSQL, whose dead
    rows VACUUM reclaims (docs/privacy.md)."""
    if engine.dialect.name != "sqlite":
        return
    path = engine.url.database
    if not path or path == ":memory:":
        return
    # A connection of its own, outside the pool (none comes back changed), in autocommit
    # (inside a transaction SQLite refuses a checkpoint), and one that never waits: a TRUNCATE
    # checkpoint waiting for a reader holds every writer meanwhile (a review's waited 3.5 s).
    try:
        connection = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            connection.close()
        if busy:
            log.warning("write-ahead log not emptied after an erasure: a reader held it")
    except sqlite3.Error:
        log.warning("write-ahead log not emptied after an erasure", exc_info=True)


_SQLITE_BUSY_MS = 10_000  # how long a connection waits for SQLite's write lock


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (pysqlite's own is broken for SAVEPOINT).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Deleted content is overwritten, not left in free pages: an erased citizen's sealed
        # name and contacts must not be read back from the file (SQLite's default keeps them).
        cursor.execute("PRAGMA secure_delete=ON")
        # SQLite's default page cache is 2 MiB: a bulk write into the ledger's four indexes then
        # goes back to the file for every other page (first sweep at 1M: 62,000 rows/s; with
        # 64 MiB, 106,000). Pages are taken only as used, so an idle connection stays small.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE: take the write lock at the start, waiting (busy_timeout) for it. A deferred
        # transaction that read before another connection's commit cannot write afterwards:
        # SQLite fails it at once ("database is locked") instead of waiting. Reads opt out.
        options = conn.get_execution_options()
        if options.get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        elif options.get(LOCK_WAIT_S) is not None:
            # Only BEGIN IMMEDIATE waits for the lock: the connection's own wait is back after.
            driver = conn.connection.driver_connection
            driver.execute(f"PRAGMA busy_timeout={max(1, int(options[LOCK_WAIT_S] * 1000))}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                driver.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def wait_at_most(session: Session, *, seconds: float) -> None:
    """Begin the session's write transaction so that it waits for others' locks at most
    `seconds`, failing (OperationalError) after: on SQLite for the write lock, on PostgreSQL
    for each row or table lock (lock_timeout). For a write whose worth ends with a window:
    waiting out the window only to be told it passed held every send behind a fan-out's
    write (a review). Call it first in the transaction."""
    connection = session.connection(execution_options={LOCK_WAIT_S: seconds})
    if connection.dialect.name == "postgresql":
        milliseconds = max(1, int(seconds * 1000))
        connection.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))


def bound_idle(bind: Session | Connection, *, seconds: float) -> None:
    """On PostgreSQL, end this session if the transaction under way sits idle (waiting for its
    client) for longer than `seconds`. A process paused mid-transaction (SIGSTOP, a stalled VM)
    otherwise keeps its row locks, and SKIP LOCKED hides those rows from the others, for as
    long as the pause lasts. Woken, it finds its connection closed (DBAPIError with
    connection_invalidated). SQLite: nothing (one writer at a time, bounded by busy_timeout)."""
    dialect = bind.dialect if isinstance(bind, Connection) else bind.get_bind().dialect
    if dialect.name == "postgresql":
        milliseconds = max(1000, int(seconds * 1000))
        bind.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {milliseconds}"))


class Deadline:
    """When a request's database work must be over (a time.monotonic() value), or None once its
    response has been sent: what runs after it (background tasks) is not bounded by it."""

    __slots__ = ("at",)

    def __init__(self, at: float | None) -> None:
        self.at = at

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


# Set for each request by service.operations.request_deadline; read in the worker threads the
# request's sync code runs in (they run in a copy of its context).
REQUEST_DEADLINE: ContextVar[Deadline | None] = ContextVar("anjeon_request_deadline", default=None)

RETRY_AFTER_S = 5  # what a 503 for an unavailable database tells clients


class DeadlinePassed(ServiceUnavailable):
    """A request's time is up: its transaction is not committed (the client has had a 503)."""

    def __init__(self) -> None:
        super().__init__(
            "the request ran out of time; nothing was changed, retry later",
            retry_after_s=RETRY_AFTER_S,
        )


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound the database work inside to `seconds` from now (or to the request's deadline, when
    that is sooner)."""
    current = REQUEST_DEADLINE.get()
    at = time.monotonic() + seconds
    if current is not None and current.at is not None:
        at = min(at, current.at)
    token = REQUEST_DEADLINE.set(Deadline(at))
    try:
        yield
    finally:
        REQUEST_DEADLINE.reset(token)


def hold_name_lock(session: Session, name: str) -> None:
    """Hold a lock on `name` until the transaction ends; another transaction asking for it
    waits until then. For what no row stands for yet: who may take a contact that nobody
    holds. (SQLite has one writer at a time: nothing to do.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name}
        )


LATE_WRITE_S = 2.0  # each wait of a write made after a request's deadline (written_within)


def late_write_engine(database_url: str) -> Engine:
    """A pool of its own for writes made after a request ran out of time (written_within): the
    app's pool may be all taken in the overload that made the request late, and each of its
    waits (a pooled connection, a new one) is longer than LATE_WRITE_S (a review)."""
    return make_engine(
        database_url,
        pool_size=1,
        max_overflow=1,
        pool_timeout_s=LATE_WRITE_S,
        connect_timeout_s=math.ceil(LATE_WRITE_S),
    )


@contextmanager
def written_within(engine: Engine) -> Iterator[Session]:
    """A short write transaction on `engine` (late_write_engine), each wait bounded by
    LATE_WRITE_S whatever the request's deadline (a request that ran out of time still records
    that it did): for a connection, a new one, others' locks (wait_at_most), and on PostgreSQL
    the connection's ping and statements (the watchdog)."""
    seconds = LATE_WRITE_S
    token = REQUEST_DEADLINE.set(Deadline(time.monotonic() + seconds))
    try:
        with Session(bind=engine) as session, session.begin():
            wait_at_most(session, seconds=seconds)
            yield session
    finally:
        REQUEST_DEADLINE.reset(token)


# psycopg has no read timeout, and a peer that stops answering while its kernel still
# acknowledges (a hung server, a stuck proxy or pooler) defeats TCP keepalives and
# tcp_user_timeout: a call would wait for ever. Shut down, the socket wakes the blocked call,
# which fails with OperationalError (a 503), and the pool discards the connection.
_WATCHDOG = SocketWatchdog(
    cut_message="database connection cut: no answer within its bound",
    logger="anjeon.db",
    thread_name="db-watchdog",
)
_FRESH = "anjeon_fresh"

# libpq's own bounds (PostgreSQL's libpq-connect docs), unless the URL sets them: connecting
# gives up after connect_timeout; data unacknowledged for 15 s ends the connection
# (tcp_user_timeout), and so does an idle one whose peer stopped answering keepalives (10 s,
# then 3 probes 5 s apart). They catch a vanished host or network, not a peer that stalls
# while acknowledging: the watchdog and the ping on checkout are for that.
_LIBPQ_BOUNDS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}


def _configure_postgresql(engine: Engine, *, ping_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[_FRESH] = True

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # pool_pre_ping's ping has no bound, so the ping is done here, under the watchdog: a
        # connection that does not answer in time is replaced (DisconnectionError), and the new
        # one is bounded by connect_timeout.
        request = REQUEST_DEADLINE.get()
        until = request.at if request is not None and request.at is not None else math.inf
        watched = math.inf
        if not record.info.pop(_FRESH, False):
            watched = min(until, time.monotonic() + ping_timeout_s)
            try:
                _WATCHDOG.watch(id(record), dbapi_connection.fileno(), watched)
                engine.dialect.do_ping(dbapi_connection)
            except BaseException as exc:
                _WATCHDOG.forget(id(record))
                if not isinstance(exc, engine.dialect.loaded_dbapi.Error):
                    raise
                why = f"ping failed: {type(exc).__name__}"
                if watched < until and time.monotonic() >= watched:
                    # Silent for the ping's whole bound (not cut at the request's deadline,
                    # nor closed by the server): the connections opened before it most likely
                    # went silent with it (a stall). All are replaced at their next checkout,
                    # unpinged, rather than each costing a request the bound.
                    raise InvalidatePoolError(why) from exc
                raise DisconnectionError(why) from exc
        if until == math.inf:
            _WATCHDOG.forget(id(record))
        elif until != watched:
            # A request holds the connection until its deadline at most.
            _WATCHDOG.watch(id(record), dbapi_connection.fileno(), until)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        _WATCHDOG.forget(id(record))

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        _WATCHDOG.forget(id(record))  # before the connection (and its fd) is closed


def make_engine(
    database_url: str,
    *,
    connect_timeout_s: int | None = None,
    pool_timeout_s: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine for either backend, with SQLite set up for concurrent use, and PostgreSQL with
    bounded waits: connecting (connect_timeout_s), a dead peer (libpq's keepalives), a pooled
    connection that stopped answering (a ping under the watchdog) and a request's deadline."""
    url = make_url(database_url)
    # A database error logged (a crash, a race lost) names its statement, not the values
    # bound to it: places, reasons, names (a privacy review). The server's own words may
    # still quote one (a unique key's DETAIL): the unique keys on personal data are hashes.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            if pool_timeout_s is not None:
                kwargs.setdefault("pool_timeout", pool_timeout_s)
        else:  # one connection per thread: no pool to size
            kwargs.pop("pool_size", None)
            kwargs.pop("max_overflow", None)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    bounds: dict[str, Any] = dict(_LIBPQ_BOUNDS)
    if connect_timeout_s is not None:
        bounds["connect_timeout"] = connect_timeout_s
    connect_args = {k: v for k, v in bounds.items() if k not in url.query}
    connect_args.update(kwargs.pop("connect_args", {}))
    if pool_timeout_s is not None:
        kwargs.setdefault("pool_timeout", pool_timeout_s)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _configure_postgresql(engine, ping_timeout_s=float(connect_timeout_s or 10))
    return engine


def _refuse_late_commit(_session: Session) -> None:
    request = REQUEST_DEADLINE.get()
    if request is not None and request.passed():
        raise DeadlinePassed()


_AFTER_COMMIT = "after_commit"


def after_commit(session: Session, call: Callable[[], None]) -> None:
    """`call` runs once this session's transaction has committed, and not at all when it rolls
    back: what must follow stored work only (a share of a limit given back for a code verified,
    not for one whose commit failed). Service functions never commit; this is how they say it."""
    session.info.setdefault(_AFTER_COMMIT, []).append(call)


def _run_after_commit(session: Session) -> None:
    for call in session.info.pop(_AFTER_COMMIT, ()):
        call()


# SQLAlchemy fires both for a savepoint too: only the session's own transaction counts (a
# review: a savepoint released ran the calls before the commit, one rolled back dropped them).
@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.in_nested_transaction():
        _run_after_commit(session)


@event.listens_for(Session, "after_rollback")
def _forget_after_commit(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_AFTER_COMMIT, None)


@contextmanager
def savepoint_as_transaction(session: Session) -> Iterator[Session]:
    """A savepoint standing in for a request's own transaction (the tests' requests, whose
    writes the test rolls back): what after_commit put off runs once it is released, and is
    dropped when it is rolled back, as for a commit and a rollback."""
    try:
        with session.begin_nested():
            yield session
    except BaseException:
        session.info.pop(_AFTER_COMMIT, None)
        raise
    _run_after_commit(session)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    # A request answered 503 at its deadline while its thread went on (on SQLite, waiting for
    # the write lock) must not store what the client was told was not stored.
    event.listen(factory, "before_commit", _refuse_late_commit)
    return factory


def database_unavailable(error: BaseException) -> bool:
    """Whether the error says the database did not answer (refused, timed out, locked, the
    connection lost, every pooled connection busy), not that a statement was wrong: a 503."""
    if isinstance(error, PoolTimeout):
        return True
    # OperationalError covers refused connections, timeouts and SQLite's "database is locked";
    # a connection lost mid-statement is invalidated whatever psycopg called its error.
    return isinstance(error, DBAPIError) and (
        isinstance(error, OperationalError | InterfaceError) or error.connection_invalidated
    )


@contextmanager
def read_first(session: Session) -> Iterator[Session]:
    """Reads before a request's writes: in a short read-only transaction of their own when the
    session has none yet, so no write transaction is open afterwards (for a network call, say);
    inside the session's transaction when it has one (a GET, a test's savepoint)."""
    if session.in_transaction():
        yield session
        return
    session.connection(execution_options={READ_ONLY: True})
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    # Nothing was written; commit (unlike rollback) keeps what was read loaded.
    session.commit()
