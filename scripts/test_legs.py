"""`make test` with PostgreSQL: the suite as several pytest processes side by side, by default
four legs (ANJEON_TEST_SHARDS). Most of the suite waits on other processes, sockets, sleeps,
a browser and the database rather than on the CPU: one leg alone kept this 2-core machine
about half busy. Each test runs in exactly one leg:
longest first, each test goes to the leg with the fewest seconds so far, by the seconds in
tests/leg_seconds.json (tests/legs.py, ANJEON_TEST_SHARD). Legs split by backend (two SQLite,
two PostgreSQL) ended up to a minute apart, the machine half used meanwhile. With
`--record-seconds` first, the run writes tests/leg_seconds.json anew from what each test took
in it (those of a second or more). Each leg has its own temporary
directory, its own Redis database and its own PostgreSQL database (leg 1
ANJEON_TEST_DATABASE_URL's, the others one made beside it, with PostGIS); its output goes to
var/test-logs/<leg>.log, and the end of each is printed."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "test-logs"
SECONDS_FILE = ROOT / "tests" / "leg_seconds.json"  # read by tests/legs.py
RECORDED_FROM_S = 1.0  # the rest count as tests/legs.py's UNTIMED_S
SHARDS = int(os.environ.get("ANJEON_TEST_SHARDS", "4"))
if SHARDS < 1:
    raise SystemExit("ANJEON_TEST_SHARDS must be 1 or more")


def _database_for(share: int) -> dict[str, str]:
    """Leg 1 (share 0) takes ANJEON_TEST_DATABASE_URL; the leg of share k a new database beside
    it, `<name>_<k+1>`, with PostGIS (what a run before left is dropped). So no two legs share
    one, nor the scratch databases their tests name after it."""
    url = os.environ.get("ANJEON_TEST_DATABASE_URL")
    if not url or share == 0:
        return {}
    given = make_url(url)
    own = given.set(database=f"{given.database}_{share + 1}")
    name = sql.Identifier(own.database)
    with psycopg.connect(_libpq(given), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    with psycopg.connect(_libpq(own), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return {"ANJEON_TEST_DATABASE_URL": own.render_as_string(hide_password=False)}


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _redis_for(leg_number: int) -> dict[str, str]:
    """Each leg its own Redis database: the shared-limit tests count in Redis."""
    url = os.environ.get("ANJEON_TEST_REDIS_URL")
    if not url:
        return {}
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0)
    path = f"/{(database - leg_number) % 16}"
    return {"ANJEON_TEST_REDIS_URL": urlunsplit(parts._replace(path=path))}


def _record_seconds(legs: list[str]) -> None:
    """tests/leg_seconds.json from the seconds each leg wrote: the tests of a second or more.
    A test this run did not select keeps what the file had for it."""
    took: dict[str, float] = {}
    for leg in legs:
        took |= json.loads((LOGS / f"{leg}.seconds.json").read_text())
    before = json.loads(SECONDS_FILE.read_text()) if SECONDS_FILE.exists() else {}
    merged = {nodeid: s for nodeid, s in before.items() if nodeid not in took} | took
    kept = {nodeid: round(s, 1) for nodeid, s in sorted(merged.items()) if s >= RECORDED_FROM_S}
    SECONDS_FILE.write_text(json.dumps(kept, indent=0, ensure_ascii=False) + "\n")
    print(f"==== {SECONDS_FILE.name}: {len(kept)} of {len(took)} tests took {RECORDED_FROM_S} s+")


def main(argv: list[str]) -> int:
    record = argv[:1] == ["--record-seconds"]
    argv = argv[1:] if record else argv
    LOGS.mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "pytest").mkdir(parents=True, exist_ok=True)  # pytest makes only the leaf
    started = time.monotonic()
    # Every leg's database before any leg starts: a failure here leaves no process behind.
    databases = {share: _database_for(share) for share in range(SHARDS)}
    running = {}
    for share in range(SHARDS):
        leg = f"leg-{share + 1}"
        log = (LOGS / f"{leg}.log").open("w")
        command = [
            sys.executable,
            "-m",
            "pytest",
            f"--basetemp={ROOT / 'var' / 'pytest' / leg}",
            *argv,
        ]
        env = {
            **os.environ,
            **_redis_for(share),
            **databases[share],
            "ANJEON_TEST_SHARD": f"{share}/{SHARDS}",
        }
        if record:
            env["ANJEON_TEST_SECONDS_OUT"] = str(LOGS / f"{leg}.seconds.json")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: S603
        running[leg] = (process, log, time.monotonic())
    # Each leg timed when it ends, not when the legs listed before it are done.
    took: dict[str, float] = {}
    while len(took) < len(running):
        for leg, (process, _, leg_started) in running.items():
            if leg not in took and process.poll() is not None:
                took[leg] = time.monotonic() - leg_started
        time.sleep(0.5)
    failed = []
    for leg, (process, log, _) in running.items():
        code = process.wait()
        log.close()
        text = (LOGS / f"{leg}.log").read_text(errors="replace")
        # A passing leg: its summary (and slowest tests); a failing one: its failures too.
        tail = text[-5000:] if code == 0 else text[-60000:]
        print(f"==== {leg}: exit {code} in {took[leg]:.0f} s (log: var/test-logs/{leg}.log)")
        print(tail)
        if code != 0:
            failed.append(leg)
    print(f"==== all legs in {time.monotonic() - started:.0f} s; failed: {failed or 'none'}")
    if record and not failed:
        _record_seconds(list(running))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
