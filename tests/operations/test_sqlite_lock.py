"""LONG (about 50 s): on SQLite, another process holds the write lock for 30 s under load.

`anjeon serve` (API, scheduler, in-process dispatcher) runs on a SQLite file. Citizens register,
an advisory is issued, and while its SMS burst is going out another process takes the database's
write lock (BEGIN IMMEDIATE) and keeps it 30 s. Writes wait SQLite's busy timeout (10 s), then
answer 503 with Retry-After: never a 500, none later than the request deadline; the process
lives. After the release everything drains: every citizen answered 201 gets the SMS exactly once
and the e-mail, and a 503 stored nothing."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

from service.migrate import upgrade
from tests.loopback_server import free_port
from tests.operations.service_process import (
    Traffic,
    check_answers,
    consul_key,
    log_lines,
    log_tail,
    processes,
    service_env,
    wait_ready,
)

BEFORE = 30
HOLD_S = 30.0
REQUEST_TIMEOUT_S = 15.0
MARGIN_S = 2.0

# The other process: takes the write lock, says so, keeps it, lets go.
_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("released", flush=True)
"""


def test_another_process_holding_the_sqlite_write_lock_for_30_s(tmp_path, twilio, smtp):
    path = tmp_path / "anjeon.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Twilio's answers may come late on a loaded machine: given up after 2 s, a send the fake
    # then made anyway was looked up before it was made, and sent twice (seen once in CI at
    # 1789884, 2 of 58 SMS). The look-up now waits twice the timeout after a try (the test
    # in test_failures.py); this test is about the lock, so Twilio is given time to answer.
    env = service_env(url, twilio, smtp, port=port, twilio_mps=10, twilio_timeout_s=8.0)
    # One process (the dispatch worker on its own is in test_database_outage.py): a second
    # interpreter starting beside it would add more time than the lock itself.
    with processes(("serve", env), logs=tmp_path) as (serve,):
        key = consul_key(url)  # while it starts
        wait_ready(base, serve, tmp_path)
        _locked(base, url, path, key, twilio, smtp, tmp_path, serve)


def _locked(base, url, path: Path, key, twilio, smtp, logs, serve) -> None:
    traffic = Traffic(base, key, twilio, smtp)
    traffic.prepare(BEFORE, burst_sms=5, logs=logs)
    traffic.start(registering=4)
    probe = traffic.probe
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(HOLD_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    locked = probe.now()
    sms_at_lock = len(twilio.messages)
    assert holder.stdout.readline().strip() == "released"
    released = probe.now()
    holder.wait(timeout=10)
    drained, drained_at = traffic.wind_down(url, limit_s=90)
    delivery = traffic.delivery()
    during = traffic.since(locked)
    first_503 = traffic.first_503(locked, "register") or float("nan")
    statuses = Counter((a.label, a.status) for a in during)
    print(
        f"\nSQLite write lock held {released - locked:.1f} s by another process: first 503 at "
        f"{first_503 - locked:.1f} s, backlog drained {drained_at - released:.1f} s after the "
        f"release; {len(traffic.registered)} registrations stored, {sms_at_lock} SMS sent before "
        f"the lock; answers: {dict(sorted(statuses.items(), key=str))}, slowest "
        f"{max(a.elapsed for a in during):.1f} s; {delivery}"
    )

    check_answers(during, limit_s=REQUEST_TIMEOUT_S + MARGIN_S)
    assert statuses[("register", 503)] > 0
    assert serve.poll() is None, log_tail(logs)
    assert not log_lines(logs, "unhandled error"), log_lines(logs, "unhandled error")[:3]
    traffic.check_nothing_lost(url, drained=drained, logs=logs)
