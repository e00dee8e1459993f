"""Load benchmark (`make bench`, or alone: `python bench/load.py`): the service as it is deployed
(`anjeon serve --workers N` and an `anjeon dispatch` worker, on PostgreSQL), driven over loopback
by locust (headless, one process, a bounded number of users for a bounded time). Phases:

- register: a registration burst, POST /v1/citizens flat out (each sends a code by SMS);
- register_verify: register, read the code the fake Twilio received, verify it (the row is the
  verify request); half-way through, a consul issues a level-3 advisory over the citizens'
  area and a second consul approves it (four eyes), so matching, the "are you safe?" SMS and
  the dispatcher run under the load;
- status_callback: Twilio's signed delivery reports, at 100/s, for alerts really sent;
- inbound_reply: signed SMS replies ("1": safe) from citizens who were asked, flat out;
- baseline: a bare FastAPI endpoint doing one indexed look-up in the same database
  (bench/load_bare.py), served the same way (uvicorn, N workers), hit the same way.

SMS go to a fake Twilio on loopback (its own process; it answers like the Messages API and
hands each code to the generator), never anywhere real. The rate limits that stop one client
address from registering more than 20 times an hour (and the global, per-range and daily SMS
caps) are raised for the run: a load test is one client making thousands of registrations.
They are counted in Redis (ANJEON_BENCH_REDIS_URL, default redis://127.0.0.1:6379/8), as a
deployment with several processes must; memory:// when no Redis answers (and said so).

Figures go to stdout and to var/bench/load.json: rows {name, workers, requests, rps, p50_ms,
p95_ms, p99_ms, errors}, with the machine's load average and each process group's CPU seconds.

Environment: ANJEON_BENCH_DATABASE_URL (required: a PostgreSQL URL whose user may create
databases; the run uses a scratch database <its name>_bench_load beside it, dropped afterwards),
ANJEON_LOAD_S (measured seconds per phase, default 30), ANJEON_LOAD_USERS (concurrent users of
the flat-out phases, default 32), ANJEON_LOAD_WORKERS (API worker processes, default 2).
"""

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECONDS = float(os.environ.get("ANJEON_LOAD_S", 30))
USERS = int(os.environ.get("ANJEON_LOAD_USERS", 32))
WORKERS = int(os.environ.get("ANJEON_LOAD_WORKERS", 2))
WARMUP_S = 3.0  # each phase: users start, then this long before the measured window
SPAWN_RATE = 8  # users started a second: a burst of connections is all taken by one worker
CALLBACK_RPS = 100
CALLBACK_USERS = 10
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-twilio-auth-token"  # noqa: S105 - the loopback fake's
TWILIO_FROM = "+15005550006"
GOAL = {"rps": 1000, "p99_ms": 100, "errors": 0}
OUT = ROOT / "var" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the fake Twilio (own process)


def serve_twilio() -> None:
    """A Messages API that accepts everything (201), remembers each message, and answers two
    questions of the generator: GET /_bench/code?to=E164 (held until that number's code has
    come, up to 10 s) and GET /_bench/sent (the alerts: [sid, to, status callback])."""
    import asyncio

    import uvicorn

    codes: dict[str, str] = {}
    waiting: dict[str, asyncio.Future] = {}
    alerts: list[list[str]] = []
    counter = iter(range(1, 10**12))
    code_in = re.compile(r"\b(\d{6})\b")

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        status, payload = 200, b""
        if scope["method"] == "POST" and scope["path"].endswith("/Messages.json"):
            form = dict(parse_qsl(body.decode()))
            sid = f"SM{next(counter):032x}"
            to, text = form.get("To", ""), form.get("Body", "")
            if form.get("StatusCallback"):
                alerts.append([sid, to, form["StatusCallback"]])
            else:
                found = code_in.search(text)
                if found:
                    codes[to] = found.group(1)
                    future = waiting.pop(to, None)
                    if future and not future.done():
                        future.set_result(found.group(1))
            status = 201
            payload = json.dumps(
                {"sid": sid, "to": to, "body": text, "status": "queued", "account_sid": ACCOUNT_SID}
            ).encode()
        elif scope["path"] == "/_bench/code":
            to = dict(parse_qsl(scope["query_string"].decode())).get("to", "")
            code = codes.pop(to, None)
            if code is None:
                future = waiting.setdefault(to, asyncio.get_running_loop().create_future())
                try:
                    code = await asyncio.wait_for(future, 10)
                    codes.pop(to, None)
                except TimeoutError:
                    waiting.pop(to, None)
                    status = 404
            payload = (code or "").encode()
        elif scope["path"] == "/_bench/sent":
            payload = json.dumps(alerts).encode()
        else:
            status = 404
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def process(argv: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A child process, logging to a file, stopped with SIGTERM (then SIGKILL) at the end."""
    with log.open("w") as out:
        child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)


def wait_ready(url: str, child: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def wait_started(log: Path, workers: int, timeout_s: float = 120) -> None:
    """Until every worker process has logged the end of its start-up: the first /readyz answer
    comes from whichever worker was ready first."""
    deadline = time.monotonic() + timeout_s
    while log.read_text().count("Application startup complete") < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"not all {workers} workers started:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes and of their children that ended (reaped)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLK_TCK


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every user), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU seconds of named groups of processes over a phase. postgres counts every database
    of the server (other users' too); machine is the whole machine, this run and everyone
    else's."""

    def __init__(self, groups: dict[str, Callable[[], float]]) -> None:
        self.groups = {**groups, "postgres": lambda: cpu_seconds(postgres_pids())}
        self.groups["machine"] = machine_busy_seconds
        self.start = {name: read() for name, read in self.groups.items()}

    def read(self) -> dict[str, float]:
        return {name: round(read() - self.start[name], 1) for name, read in self.groups.items()}


# ---------------------------------------------------------------- database


def scratch_name(url: str) -> str:
    """The scratch database: named after the one in the URL, so two people who share a server
    and each bring their own database never drop each other's run."""
    from sqlalchemy.engine import make_url

    return f"{make_url(url).database or 'anjeon'}_bench_load"


def scratch_database(url: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from service.db import make_engine

    name = scratch_name(url)
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy import text

    from service.db import make_engine

    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch_name(url)}" WITH (FORCE)'))
    admin.dispose()


def scalar(url: str, sql: str, **params: object) -> object:
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(url)
    with engine.connect() as connection:
        value = connection.scalar(text(sql), params)
    engine.dispose()
    return value


def counts(url: str, sql: str) -> dict[str, int]:
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(url)
    with engine.connect() as connection:
        rows = dict(connection.execute(text(sql)).all())
    engine.dispose()
    return rows


def redis_storage() -> str:
    """Redis for the rate limits, its anjeon keys cleared; memory:// when none answers."""
    url = os.environ.get("ANJEON_BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2)
        keys = list(client.scan_iter(match="anjeon*"))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:
        print(f"no Redis at {url} ({type(exc).__name__}): rate limits counted per process")
        return "memory://"
    return url


# ---------------------------------------------------------------- phases


def run_phase(phase: dict, meter: Callable[[], CpuMeter], *, port: int, parent: int) -> dict:
    """One locust run in its own process. From the start of its measured window: the CPU
    seconds each group of processes spent, and how the generator's connections are spread
    over the worker processes (each keeps its connections: one worker may hold them all)."""
    load_before = os.getloadavg()
    with subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "load_locust.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    ) as generator:
        generator.stdin.write(json.dumps(phase) + "\n")
        generator.stdin.close()
        assert generator.stdout.readline().strip() == "measuring"
        cpu = meter()
        time.sleep(1)
        spread = connections_per_worker(port, workers_of(parent))
        output = generator.stdout.read()
    if generator.returncode:
        raise SystemExit(f"locust phase {phase['name']} failed ({generator.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    result["cpu_s"] = cpu.read()
    result["connections_per_worker"] = spread
    result["load_before"] = [round(x, 2) for x in load_before]
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def workers_of(parent: int) -> list[int]:
    """The worker processes uvicorn started (not multiprocessing's resource tracker)."""
    found = []
    for pid in descendants(parent):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def connections_per_worker(port: int, pids: list[int]) -> list[int]:
    """Established connections to port held by each worker, most first."""
    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    link = os.readlink(fd)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    owner[int(link[8:-1])] = pid
        except OSError:
            continue
    held = dict.fromkeys(pids, 0)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            pid = owner.get(int(fields[9]))
            if pid in held:
                held[pid] += 1
    return sorted(held.values(), reverse=True)


def row(name: str, result: dict, stats_name: str, *, users: int, **extra: object) -> dict:
    # Every request the service answered in the window (a verify phase registers too).
    all_requests = sum(
        r["requests"] for n, r in result["rows"].items() if not n.startswith("fake twilio")
    )
    stats = result["rows"].get(stats_name) or {
        "requests": 0,
        "failures": 0,
        "rps": 0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
    }
    return {
        "name": name,
        "workers": WORKERS,
        "requests": stats["requests"],
        "rps": round(stats["rps"], 1),
        "p50_ms": stats["p50_ms"],
        "p95_ms": stats["p95_ms"],
        "p99_ms": stats["p99_ms"],
        "errors": stats["failures"],
        "users": users,
        "seconds": round(result["elapsed_s"], 1),
        "load_avg_before": result["load_before"],
        "load_avg_after": result["load_after"],
        "cpu_s": {**result["cpu_s"], "locust": round(result["generator_cpu_s"], 1)},
        "api_cpu_ms_per_request": round(1000 * result["cpu_s"]["api"] / max(1, all_requests), 1),
        "connections_per_worker": result["connections_per_worker"],
        "error_kinds": result["errors"],
        **extra,
    }


def issue_advisory(base: str, keys: tuple[str, str], at_s: float, out: dict) -> None:
    """At `at_s` seconds from now: consul A issues a level-3 advisory over greater Tokyo (it
    waits for approval: four eyes) and consul B approves it; matching and enqueueing happen in
    the approval's request."""
    import httpx

    time.sleep(at_s)
    body = {
        "title": {"ko": "도쿄 출국 권고 (부하 시험)", "en": "Tokyo: leave (load test)"},
        "message": {"ko": "부하 시험입니다.", "en": "A load test."},
        "level": 3,
        "category": "disaster",
        "area": {"circles": [{"lat": 35.68, "lon": 139.70, "radius_km": 40}]},
        "expires": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
    }
    with httpx.Client(base_url=base, timeout=60) as client:
        started = time.monotonic()
        issued = client.post("/v1/advisories", json=body, headers=_bearer(keys[0]))
        out["issue_status"], out["issue_s"] = issued.status_code, time.monotonic() - started
        advisory = issued.json()
        started = time.monotonic()
        approved = client.post(
            f"/v1/advisories/{advisory['id']}/approve",
            json={"proposal_id": (advisory.get("pending") or {}).get("id", 0)},
            headers=_bearer(keys[1]),
        )
        out["approve_status"], out["approve_s"] = approved.status_code, time.monotonic() - started
        out["advisory"] = advisory["id"]
        out["at"] = time.monotonic()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_dispatched(url: str, timeout_s: float = 120) -> float:
    """Until no alert is open (pending, retry_wait, claimed); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        open_rows = scalar(
            url, "SELECT count(*) FROM alert WHERE status IN ('pending', 'retry_wait', 'claimed')"
        )
        if not open_rows:
            break
        time.sleep(0.5)
    return time.monotonic() - started


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-twilio", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if args.serve_twilio:
        serve_twilio()
        return 0
    admin_url = os.environ.get("ANJEON_BENCH_DATABASE_URL", "")
    if not admin_url.startswith("postgresql"):
        print("load benchmark skipped: set ANJEON_BENCH_DATABASE_URL to a PostgreSQL URL")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    url = scratch_database(admin_url)
    try:
        rows, notes = measure(url)
    finally:
        if not args.keep:
            drop_database(admin_url)
    print_table(rows, notes)
    path = OUT / "load.json"
    path.write_text(json.dumps(rows, indent=2))
    print(f"figures written to {path}")
    return 0


def measure(url: str) -> tuple[list[dict], dict]:
    from service.migrate import upgrade

    upgrade(url)
    storage = redis_storage()
    port, bare_port = free_port(), free_port()
    public = f"http://127.0.0.1:{port}"
    notes: dict = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "rate_limit_storage": storage.split("://")[0],
        "cpus": os.cpu_count(),
    }
    twilio = subprocess.Popen(
        [sys.executable, __file__, "--serve-twilio"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        twilio_url = f"http://127.0.0.1:{int(twilio.stdout.readline())}"
        env = {
            **os.environ,
            "ANJEON_DATABASE_URL": url,
            "ANJEON_SECRET_KEY": secrets.token_urlsafe(40),
            "ANJEON_HOST": "127.0.0.1",
            "ANJEON_PORT": str(port),
            "ANJEON_PUBLIC_BASE_URL": public,
            "ANJEON_SMS_NOTIFIER": "twilio",
            "ANJEON_EMAIL_NOTIFIER": "console",
            "ANJEON_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "ANJEON_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "ANJEON_TWILIO_FROM": TWILIO_FROM,
            "ANJEON_TWILIO_API_BASE": twilio_url,
            "ANJEON_TWILIO_MPS": "0",
            # One client address makes every registration of a load test: its limits (and the
            # global, per-range and daily SMS caps) are raised, nothing else is turned off.
            "ANJEON_RATE_LIMIT_STORAGE": storage,
            "ANJEON_RATE_LIMIT_CLIENT": "10000000/hour",
            "ANJEON_RATE_LIMIT_PREFIX": "10000000/hour",
            "ANJEON_RATE_LIMIT_PREFIX_CLIENT": "10000000/hour",
            "ANJEON_RATE_LIMIT_CLIENT_UNVERIFIED": "10000000/hour",
            "ANJEON_RATE_LIMIT_GLOBAL": "10000000/hour",
            "ANJEON_SMS_DAILY_BUDGET": "100000000",
        }
        keys = tuple(_staff_key(env, name) for name in ("load-a", "load-b"))
        anjeon = [sys.executable, "-m", "service.cli"]
        serve_log, dispatch_log = OUT / "load-serve.log", OUT / "load-dispatch.log"
        rows: list[dict] = []
        with (
            process([*anjeon, "serve", "--workers", str(WORKERS)], env=env, log=serve_log) as api,
            process([*anjeon, "dispatch"], env=env, log=dispatch_log) as dispatcher,
        ):
            wait_ready(f"{public}/readyz", api, serve_log)
            wait_started(serve_log, WORKERS)
            meter = lambda: CpuMeter(  # noqa: E731
                {
                    "api": lambda: cpu_seconds(descendants(api.pid)),
                    "dispatch": lambda: cpu_seconds([dispatcher.pid]),
                    "fake_twilio": lambda: cpu_seconds([twilio.pid]),
                }
            )
            common = {
                "host": public,
                "public": public,
                "twilio": twilio_url,
                "auth_token": AUTH_TOKEN,
                "from": TWILIO_FROM,
                "warmup_s": WARMUP_S,
                "spawn_rate": SPAWN_RATE,
                "seconds": SECONDS,
            }
            print(
                f"load {os.getloadavg()} before the first phase; {SECONDS:.0f} s a phase",
                flush=True,
            )
            result = run_phase(
                {**common, "name": "register", "users": USERS, "phone_block": 2},
                meter,
                port=port,
                parent=api.pid,
            )
            rows.append(row("register", result, "register", users=USERS))
            print_row(rows[-1])

            advisory: dict = {}
            thread = threading.Thread(
                target=issue_advisory,
                args=(public, keys, WARMUP_S + SECONDS / 2, advisory),
                daemon=True,
            )
            phase_started = time.monotonic()
            thread.start()
            result = run_phase(
                {**common, "name": "register_verify", "users": USERS, "phone_block": 4},
                meter,
                port=port,
                parent=api.pid,
            )
            thread.join(timeout=120)
            advisory["at_s"] = round(advisory.pop("at", phase_started) - phase_started, 1)
            registered = result["rows"].get("register (verify phase)", {})
            rows.append(
                row(
                    "register_verify",
                    result,
                    "register_verify",
                    users=USERS,
                    register_rps=round(registered.get("rps", 0), 1),
                    register_p99_ms=registered.get("p99_ms"),
                    advisory={
                        k: round(v, 2) if isinstance(v, float) else v for k, v in advisory.items()
                    },
                )
            )
            print_row(rows[-1])
            notes["dispatch_wait_s"] = round(wait_dispatched(url), 1)
            import httpx

            sent = httpx.get(f"{twilio_url}/_bench/sent", timeout=30).json()
            notes["alerts_sent"] = len(sent)
            if not sent:
                raise SystemExit("the advisory sent no SMS: nothing to report or reply to")

            result = run_phase(
                {
                    **common,
                    "name": "status_callback",
                    "users": CALLBACK_USERS,
                    "per_user_rps": CALLBACK_RPS / CALLBACK_USERS,
                    "sent": sent,
                    "phone_block": 6,
                },
                meter,
                port=port,
                parent=api.pid,
            )
            rows.append(
                row(
                    "status_callback",
                    result,
                    "status_callback",
                    users=CALLBACK_USERS,
                    target_rps=CALLBACK_RPS,
                )
            )
            print_row(rows[-1])
            result = run_phase(
                {**common, "name": "inbound_reply", "users": USERS, "sent": sent, "phone_block": 7},
                meter,
                port=port,
                parent=api.pid,
            )
            rows.append(row("inbound_reply", result, "inbound_reply", users=USERS))
            print_row(rows[-1])
        notes["outcome"] = outcome(url, advisory.get("advisory"))

        max_id = int(scalar(url, "SELECT max(id) FROM citizen") or 1)
        bare_env = {**os.environ, "ANJEON_BENCH_BARE_URL": url}
        bare_log = OUT / "load-bare.log"
        bare_argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "load_bare:app",
            "--app-dir",
            "bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(bare_port),
            "--workers",
            str(WORKERS),
            "--log-level",
            "info",
            "--no-access-log",
        ]
        with process(bare_argv, env=bare_env, log=bare_log) as bare:
            bare_url = f"http://127.0.0.1:{bare_port}"
            wait_ready(f"{bare_url}/lookup/1", bare, bare_log)
            wait_started(bare_log, WORKERS)
            bare_meter = lambda: CpuMeter({"api": lambda: cpu_seconds(descendants(bare.pid))})  # noqa: E731
            result = run_phase(
                {**common, "host": bare_url, "name": "baseline", "users": USERS, "max_id": max_id},
                bare_meter,
                port=bare_port,
                parent=bare.pid,
            )
            rows.append(row("baseline_lookup", result, "baseline", users=USERS))
            print_row(rows[-1])
    finally:
        twilio.terminate()
        twilio.wait(timeout=10)
    notes["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    notes["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    for item in rows:
        item["run"] = notes
    return rows, notes


def _staff_key(env: dict[str, str], name: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "staff",
            "create-key",
            "--name",
            name,
            "--role",
            "consul",
        ],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, for the record
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def outcome(url: str, advisory_id: str | None) -> dict:
    """What the load did in the database: the work was real."""
    return {
        "citizens": counts(url, "SELECT status, count(*) FROM citizen GROUP BY status"),
        "alerts": counts(url, "SELECT status, count(*) FROM alert GROUP BY status"),
        "checkin_answers": scalar(url, "SELECT count(*) FROM checkin_answer"),
        "advisory": advisory_id,
    }


# ---------------------------------------------------------------- output


def print_row(item: dict) -> None:
    cpu = ", ".join(f"{k} {v}" for k, v in item["cpu_s"].items())
    print(
        f"{item['name']:<16} {item['requests']:>7} requests {item['rps']:>8.1f}/s  "
        f"p50 {item['p50_ms']} p95 {item['p95_ms']} p99 {item['p99_ms']} ms  "
        f"errors {item['errors']}  load {item['load_avg_after'][0]}  CPU s: {cpu}  "
        f"connections per worker {item['connections_per_worker']}",
        flush=True,
    )
    for kind, n in item["error_kinds"].items():
        print(f"    {n} x {kind}", flush=True)


def print_table(rows: list[dict], notes: dict) -> None:
    baseline = next((r for r in rows if r["name"] == "baseline_lookup"), None)
    print()
    print(
        f"{WORKERS} API workers on PostgreSQL, {notes['cpus']} CPUs, commit {notes['commit']}, "
        f"{notes['started']}; rate limits in {notes['rate_limit_storage']}"
    )
    header = (
        f"{'row':<16} {'users':>5} {'requests':>8} {'req/s':>8} {'p50':>5} {'p95':>5} "
        f"{'p99':>5} {'errors':>6} {'load 1m':>7}   beside the bare look-up"
    )
    print(header)
    print("-" * len(header))
    for item in rows:
        beside = ""
        if baseline and item is not baseline and baseline["rps"]:
            beside = (
                f"{item['rps'] / baseline['rps']:.1%} of its req/s "
                f"({baseline['rps']:.0f}/s, p99 {baseline['p99_ms']} ms)"
            )
        print(
            f"{item['name']:<16} {item['users']:>5} {item['requests']:>8} {item['rps']:>8.1f} "
            f"{item['p50_ms'] or '-':>5} {item['p95_ms'] or '-':>5} {item['p99_ms'] or '-':>5} "
            f"{item['errors']:>6} {item['load_avg_after'][0]:>7}   {beside}"
        )
    register = rows[0]
    met = (
        register["rps"] >= GOAL["rps"]
        and (register["p99_ms"] or 1e9) <= GOAL["p99_ms"]
        and register["errors"] == GOAL["errors"]
    )
    print(
        f"goal for register: >= {GOAL['rps']} req/s, p99 <= {GOAL['p99_ms']} ms, 0 errors: "
        f"{'met' if met else 'missed'}"
    )
    verify = next(r for r in rows if r["name"] == "register_verify")
    print(f"advisory half-way through register_verify: {verify['advisory']}")
    print(
        f"after the load: {notes['outcome']}; {notes['alerts_sent']} alert SMS at the fake "
        f"Twilio, dispatched {notes['dispatch_wait_s']} s after the phase"
    )


if __name__ == "__main__":
    sys.exit(main())
