"""What partitioning the ledger by advisory would buy and what it would cost (issue #15 names
it), measured on the database `bench/geomatch.py --backend postgresql` leaves behind:

  insert   the 5,000-vertex advisory's INSERT … SELECT (the text postgis.enqueue sends) into the
           ledger, against the same into an empty table with the ledger's indexes and fillfactor:
           what a new advisory's own partition would be. Alternated, each committed: warm, then
           each right after a CHECKPOINT.
  reads    per-citizen reads of the ledger (the dispatcher's routine cap over a batch of 100
           and of 500 citizens, a reply's look-up of one citizen's alerts) on the ledger, against
           a copy partitioned by advisory (one partition per advisory the ledger holds), each
           planned at every call. Look-ups by alert id and the claim are not measured.

Leaves the database as it found it but for the committed advisory rows of `insert`.
Usage: ANJEON_BENCH_DATABASE_URL=… .venv/bin/python bench/ledger_partitions.py [insert|reads]"""

import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from sqlalchemy import Connection, event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.geomatch import NOW, big_draft, big_polygon
from service.advisories.service import create_advisory
from service.db import make_engine, make_session_factory
from service.geo.areas import Area
from service.geomatch import postgis
from service.startup import load_for_life

ROUNDS = 8
# Columns a copy names: all but the stored, computed `is_open`.
_COLUMNS = (
    "id, advisory_id, revision, citizen_id, channel, status, created_at, priority, attempts, "
    "retry_base, due_at, claimed_by, outcome_unknown, provider_ref, error_code, last_error, "
    "segments, fallback_of, sent_at, delivered_at, opened_at, updated_at, checkin_round"
)


def advisory_insert(url: str) -> tuple[str, dict]:
    """The statement and parameters postgis.enqueue sends for the 5,000-vertex advisory."""
    engine = make_engine(url)
    captured: list[tuple[str, dict]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def keep(_c: Connection, _cur: object, statement: str, params: dict, *_: object) -> None:
        if statement.startswith("INSERT INTO alert"):
            captured.append((statement, params))

    session = make_session_factory(engine)()
    draft = big_draft(Area(geometry=big_polygon()))
    create_advisory(session, draft=draft, issued_by="probe", now=NOW)
    session.flush()
    session.rollback()
    session.close()
    engine.dispose()
    return captured[0]


def insert(url: str) -> None:
    load_for_life()
    statement, params = advisory_insert(url)
    fresh = statement.replace("INSERT INTO alert (", "INSERT INTO alert_probe (", 1)
    connection = make_engine(url).raw_connection().driver_connection
    cursor = connection.cursor()
    cursor.execute("DROP TABLE IF EXISTS alert_probe")
    cursor.execute("CREATE TABLE alert_probe (LIKE alert INCLUDING ALL) WITH (fillfactor = 70)")
    connection.commit()
    first_id = cursor.execute("SELECT coalesce(max(advisory_id), 0) + 1 FROM alert").fetchone()[0]
    # Warm: the rounds reach the same citizens, so the second finds their index pages in memory
    # and already in the WAL since the last checkpoint. After a CHECKPOINT (the usual case for
    # an advisory in service, minutes from the one before) each page is written whole again.
    for checkpoint in (False, True):
        seconds: dict[str, list[float]] = {"ledger": [], "own table": []}
        for i in range(ROUNDS):
            for name in ("ledger", "own table") if i % 2 == 0 else ("own table", "ledger"):
                if name == "own table":
                    cursor.execute("TRUNCATE alert_probe")
                    connection.commit()
                if checkpoint:
                    cursor.execute("CHECKPOINT")
                    connection.commit()
                for setting in postgis._PLAN:  # SET LOCAL: after the commits above
                    cursor.execute(setting)
                values = {**params, "advisory_id": first_id}
                first_id += 1
                started = time.perf_counter()
                cursor.execute(statement if name == "ledger" else fresh, values)
                seconds[name].append(time.perf_counter() - started)
                rows = cursor.rowcount
                connection.commit()
        case = "each right after a CHECKPOINT" if checkpoint else "warm"
        print(f"the advisory's INSERT … SELECT, {rows:,} rows, {ROUNDS} rounds alternated, {case}:")
        for name, each in seconds.items():
            print(f"  into the {name:<9}  median {statistics.median(each):.3f} s  {_rounded(each)}")
    cursor.execute("DROP TABLE alert_probe")
    connection.commit()


def reads(url: str) -> None:
    connection = make_engine(url).raw_connection().driver_connection
    cursor = connection.cursor()
    advisories = [r[0] for r in cursor.execute("SELECT DISTINCT advisory_id FROM alert ORDER BY 1")]
    _drop_copy(connection, len(advisories))
    cursor.execute(
        "CREATE TABLE alert_parted (LIKE alert INCLUDING DEFAULTS INCLUDING GENERATED)"
        " PARTITION BY LIST (advisory_id)"
    )
    cursor.execute("CREATE INDEX ON alert_parted (citizen_id)")
    cursor.execute(
        "CREATE UNIQUE INDEX ON alert_parted"
        " (advisory_id, revision, citizen_id, channel, checkin_round)"
    )
    for k, advisory_id in enumerate(advisories):
        cursor.execute(
            f"CREATE TABLE alert_parted_{k} PARTITION OF alert_parted"
            f" FOR VALUES IN ({int(advisory_id)}) WITH (fillfactor = 70)"
        )
        if k % 50 == 49:  # one transaction would run out of lock slots
            connection.commit()
    started = time.perf_counter()
    cursor.execute(f"INSERT INTO alert_parted ({_COLUMNS}) SELECT {_COLUMNS} FROM alert")
    copied = cursor.rowcount
    connection.commit()
    connection.autocommit = True
    cursor.execute("VACUUM ANALYZE alert_parted")
    cursor.execute("VACUUM ANALYZE alert")
    connection.autocommit = False
    print(
        f"{copied:,} rows of {len(advisories)} advisories copied into as many partitions"
        f" in {time.perf_counter() - started:.0f} s"
    )
    citizens = [
        r[0]
        for r in cursor.execute(
            "SELECT citizen_id FROM (SELECT DISTINCT citizen_id FROM alert) c"
            " ORDER BY random() LIMIT 20000"
        )
    ]
    # Planned at every call, as the service's queries are (SQLAlchemy writes an IN list whose
    # text changes with its length); psycopg would otherwise reuse a prepared plan.
    connection.prepare_threshold = None
    pick = random.Random(20261204)  # noqa: S311 - a sample, not a secret
    since = NOW - timedelta(hours=1)

    def routine_cap(table: str, batch: list[int]) -> None:  # outbox.sent_since, as it was then
        cursor.execute(
            f"SELECT citizen_id, count(*) FROM {table} WHERE citizen_id = ANY(%s)"
            " AND sent_at >= %s GROUP BY citizen_id",
            (batch, since),
        ).fetchall()

    def one_citizen(table: str, batch: list[int]) -> None:  # a reply's look-up, an erasure
        cursor.execute(
            f"SELECT id, status FROM {table} WHERE citizen_id = %s", (batch[0],)
        ).fetchall()

    for label, read, size in (
        ("routine cap, 100 citizens", routine_cap, 100),
        ("routine cap, 500 citizens", routine_cap, 500),
        ("one citizen", one_citizen, 1),
    ):
        seconds: dict[str, list[float]] = {"alert": [], "alert_parted": []}
        for i in range(70):
            batch = pick.sample(citizens, size)  # the same citizens from both tables
            for table in ("alert", "alert_parted") if i % 2 == 0 else ("alert_parted", "alert"):
                started = time.perf_counter()
                read(table, batch)
                if i >= 10:  # the first ten warm the caches
                    seconds[table].append(time.perf_counter() - started)
        medians = "  ".join(f"{t} {1000 * statistics.median(s):.2f} ms" for t, s in seconds.items())
        print(f"  {label:<26} median of 60: {medians}")
    connection.rollback()
    _drop_copy(connection, len(advisories))


def _drop_copy(connection: psycopg.Connection, partitions: int) -> None:
    cursor = connection.cursor()
    for k in range(partitions):
        cursor.execute(f"DROP TABLE IF EXISTS alert_parted_{k}")
        if k % 50 == 49:
            connection.commit()
    cursor.execute("DROP TABLE IF EXISTS alert_parted")
    connection.commit()


def _rounded(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


if __name__ == "__main__":
    database = os.environ.get("ANJEON_BENCH_DATABASE_URL")
    if not database:
        sys.exit("ANJEON_BENCH_DATABASE_URL: the PostgreSQL database geomatch.py left behind")
    which = sys.argv[1:] or ["insert", "reads"]
    for part in which:
        {"insert": insert, "reads": reads}[part](database)
