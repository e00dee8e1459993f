"""Writing new alert rows fast: the raw driver (sqlite3 executemany, PostgreSQL COPY into a
staging table), rows in key order, duplicates dropped by the ledger's unique key. Every row
names its urgency class (service/ledger/priority.py): the caller knows the advisory's level."""

from datetime import datetime

import numpy as np
from psycopg.errors import UniqueViolation
from sqlalchemy import Connection

from service.ledger import priority as urgency
from service.ledger import states

# The columns every writer of new rows names (the others have server defaults: checkin_round 0),
# and what every path that may meet an existing row of the ledger's key appends: one spelling,
# understood by SQLite and PostgreSQL alike.
COLUMNS = "advisory_id, revision, citizen_id, channel, priority, status, created_at"
ON_CONFLICT = " ON CONFLICT (advisory_id, revision, citizen_id, channel, checkin_round) DO NOTHING"
# What the bulk writers of matched rows name: the columns above and whether the row is told
# ahead of a stay (alert.told_ahead: 0 or 1, models.Ahead).
_MATCHED = f"{COLUMNS}, told_ahead"
# The row's own order (ahead last), then the stamp: each row's parameters are (*row, stamp).
_INSERT_SQLITE = (
    "INSERT INTO alert (advisory_id, revision, citizen_id, channel, priority, told_ahead, status, "  # noqa: S608
    f"created_at) VALUES (?, ?, ?, ?, ?, ?, '{states.PENDING}', ?){ON_CONFLICT}"
)
_INSERT_POSTGRESQL = (
    f"INSERT INTO alert ({_MATCHED}) "  # noqa: S608 - constant text, values are bound
    f"SELECT advisory_id, revision, citizen_id, channel, priority, '{states.PENDING}', %s, "
    "told_ahead "
    "FROM alert_stage"
    f"{ON_CONFLICT}"
)


def alert_rows(
    advisory_id: int,
    revision: int,
    *,
    priority: int,
    sms_ids: np.ndarray,
    email_ids: np.ndarray,
    ahead_ids: np.ndarray | None = None,
) -> list[tuple[int, int, int, str, int, bool]]:
    """Ledger rows for these citizens on each channel, of urgency class `priority`; those of
    `ahead_ids` told ahead (the row's last field: alert.told_ahead 1, else 0), one class later
    (priority.told_ahead)."""
    rows = []
    later = urgency.told_ahead(priority)
    for channel, ids in (("email", email_ids), ("sms", sms_ids)):
        if ahead_ids is None or ahead_ids.size == 0:  # the usual case, kept as fast as it was
            rows += [(advisory_id, revision, cid, channel, priority, False) for cid in ids.tolist()]
            continue
        told = np.isin(ids, ahead_ids).tolist()
        rows += [
            (advisory_id, revision, cid, channel, later if ahead else priority, ahead)
            for cid, ahead in zip(ids.tolist(), told, strict=True)
        ]
    return rows


def insert_alerts(
    connection: Connection, *, rows: list[tuple], now: datetime, priority: int = urgency.DEFAULT
) -> int:
    """Insert pending alerts (advisory_id, revision, citizen_id, channel, priority, told
    ahead), in key order, in one statement; returns how many were new. Rows of four take
    `priority`; rows without the last field are not told ahead."""
    if not rows:
        return 0
    if any(len(row) != 6 for row in rows):
        rows = [_in_full(row, priority) for row in rows]
    rows.sort()
    if connection.dialect.name == "postgresql":
        if len(rows) <= _FEW:
            return _unnest_postgresql(connection, rows, now)
        return _copy_postgresql(connection, rows, now)
    return _executemany_sqlite(connection, rows, now)


def _in_full(row: tuple, priority: int) -> tuple:
    if len(row) == 4:
        return (*row, priority, False)
    return row if len(row) == 6 else (*row, False)


def _executemany_sqlite(connection: Connection, rows: list[tuple], now: datetime) -> int:
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DateTime format
    cursor = connection.connection.driver_connection.cursor()
    try:
        before = connection.connection.driver_connection.total_changes
        cursor.executemany(_INSERT_SQLITE, [(*row, stamp) for row in rows])
        return connection.connection.driver_connection.total_changes - before
    finally:
        cursor.close()


# A new citizen's few rows: one statement, where COPY would cost a savepoint and two round trips.
_FEW = 1000
_INSERT_UNNEST = (
    f"INSERT INTO alert ({_MATCHED}) "  # noqa: S608 - constant text, values are bound
    f"SELECT a, r, c, ch, p, '{states.PENDING}', %s, t::int FROM unnest(%s::bigint[], "
    "%s::int[], %s::bigint[], %s::varchar[], %s::smallint[], %s::boolean[]) "
    "AS u(a, r, c, ch, p, t)"
    f"{ON_CONFLICT}"
)


def _unnest_postgresql(connection: Connection, rows: list[tuple], now: datetime) -> int:
    columns = [list(column) for column in zip(*rows, strict=True)]
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(_INSERT_UNNEST, (now, *columns))
        return cursor.rowcount
    finally:
        cursor.close()


def _copy_postgresql(connection: Connection, rows: list[tuple], now: datetime) -> int:
    # Usually every row is new: COPY straight into the ledger (the fast path). If another path
    # enqueued one of them meanwhile, the unique key refuses the COPY and the slower staging
    # route below drops just the duplicates.
    try:
        with connection.begin_nested():
            cursor = connection.connection.driver_connection.cursor()
            with cursor.copy(f"COPY alert ({_MATCHED}) FROM STDIN") as copy:
                copy.write(_copy_text(rows, now))
            return len(rows)
    except UniqueViolation:
        pass
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS alert_stage "
            "(advisory_id bigint, revision int, citizen_id bigint, channel varchar(8), "
            "priority smallint, told_ahead smallint) "
            "ON COMMIT DELETE ROWS"
        )
        cursor.execute("TRUNCATE alert_stage")
        with cursor.copy(
            "COPY alert_stage (advisory_id, revision, citizen_id, channel, priority, told_ahead) "
            "FROM STDIN"
        ) as copy:
            for *key, told in rows:
                copy.write_row((*key, int(told)))
        cursor.execute(_INSERT_POSTGRESQL, (now,))
        return cursor.rowcount
    finally:
        cursor.close()


def _copy_text(rows: list[tuple], now: datetime) -> bytes:
    # COPY's text format made in one join: psycopg's write_row cost 5 us a row here, this 0.9
    # (26 s of a 5.3M-row first sweep). Numbers and our own channel names need no escaping;
    # any other channel is a bug (KeyError).
    middle = f"\t{states.PENDING}\t{now.isoformat()}\t"
    return "".join(
        [f"{a}\t{r}\t{c}\t{_CHANNELS[ch]}\t{p}{middle}{_TOLD[t]}\n" for a, r, c, ch, p, t in rows]
    ).encode()


_CHANNELS = {"sms": "sms", "email": "email"}
_TOLD = {False: "0", True: "1"}


_ROUND_COLUMNS = f"{COLUMNS}, checkin_round"
_INSERT_ROUND_SQLITE = (
    f"INSERT INTO alert ({_ROUND_COLUMNS}) "  # noqa: S608 - constant text, values are bound
    f"VALUES (?, ?, ?, ?, ?, '{states.PENDING}', ?, ?){ON_CONFLICT}"
)
_INSERT_ROUND_POSTGRESQL = (
    f"INSERT INTO alert ({_ROUND_COLUMNS}) "  # noqa: S608 - constant text, values are bound
    f"SELECT a, r, c, ch, p, '{states.PENDING}', %s, k FROM unnest(%s::bigint[], %s::int[], "
    "%s::bigint[], %s::varchar[], %s::smallint[], %s::smallint[]) AS u(a, r, c, ch, p, k)"
    f"{ON_CONFLICT}"
)


def insert_round_alerts(connection: Connection, *, rows: list[tuple], now: datetime) -> int:
    """Insert pending check-in requests (advisory_id, revision, citizen_id, channel, priority,
    checkin_round) in one statement; returns how many were new."""
    if not rows:
        return 0
    rows = sorted(rows)
    cursor = connection.connection.driver_connection.cursor()
    try:
        if connection.dialect.name == "postgresql":
            columns = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(_INSERT_ROUND_POSTGRESQL, (now, *columns[:5], columns[5]))
            return cursor.rowcount
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        driver = connection.connection.driver_connection
        before = driver.total_changes
        cursor.executemany(_INSERT_ROUND_SQLITE, [(*row[:5], stamp, row[5]) for row in rows])
        return driver.total_changes - before
    finally:
        cursor.close()
