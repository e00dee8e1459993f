"""`make test` with PostgreSQL: the SQLite leg and the PostgreSQL leg of the suite as two pytest
processes side by side. Most of the suite waits on other processes, sockets, a browser and
the database rather than on the CPU, so two legs on two cores take little more than the longer
one. Each test runs in exactly one leg: tests whose id names postgresql in the PostgreSQL leg,
every other one in the first. Each leg has its own temporary directory and its own Redis
database; its output goes to var/test-logs/<leg>.log, and the end of each is printed."""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "test-logs"
LEGS = {"sqlite": "not postgresql", "postgresql": "postgresql"}


def _redis_for(leg_number: int) -> dict[str, str]:
    """Each leg its own Redis database: the shared-limit tests count in Redis."""
    url = os.environ.get("ANJEON_TEST_REDIS_URL")
    if not url:
        return {}
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0)
    path = f"/{(database - leg_number) % 16}"
    return {"ANJEON_TEST_REDIS_URL": urlunsplit(parts._replace(path=path))}


def main(argv: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "pytest").mkdir(parents=True, exist_ok=True)  # pytest makes only the leaf
    started = time.monotonic()
    running = {}
    for number, (leg, selection) in enumerate(LEGS.items()):
        log = (LOGS / f"{leg}.log").open("w")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-k",
            selection,
            f"--basetemp={ROOT / 'var' / 'pytest' / leg}",
            *argv,
        ]
        env = {**os.environ, **_redis_for(number)}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: S603
        running[leg] = (process, log, time.monotonic())
    failed = []
    for leg, (process, log, leg_started) in running.items():
        code = process.wait()
        log.close()
        took = time.monotonic() - leg_started
        text = (LOGS / f"{leg}.log").read_text(errors="replace")
        # A passing leg: its summary (and slowest tests); a failing one: its failures too.
        tail = text[-5000:] if code == 0 else text[-60000:]
        print(f"==== {leg} leg: exit {code} in {took:.0f} s (log: var/test-logs/{leg}.log)")
        print(tail)
        if code != 0:
            failed.append(leg)
    print(f"==== both legs in {time.monotonic() - started:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
