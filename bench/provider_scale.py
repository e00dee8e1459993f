"""Provider scale (issue #15, item 5): a simulated 100 MPS short code with 1,000,000 SMS queued
in the ledger, drained by `anjeon dispatch` worker processes that share the sender's rate
through Redis, into a fake Twilio that models the sender's queue: it holds QUEUE segments,
drains them at MPS segments a second, and refuses a create that would overflow it with
400/21611 (as Twilio does for a From number).

Draining 1M messages at 100 segments a second takes hours of real time, so the run measures
the sustained rate over a fixed window (ANJEON_BENCH_WINDOW_S, default 120 s, after a 15 s
warm-up) with the whole million queued, and says so. Figures, per leg: segments the fake took
per second in the window against MPS (goal >= 0.95 x MPS), its queue's peak depth and the
overflows (goal 0). In the same run, the baseline: the bare SDK sending to the same fake from
one loop paced at MPS, no ledger or templates.

    ANJEON_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/anjeon_bench \\
    ANJEON_BENCH_REDIS_URL=redis://127.0.0.1:6379/12 python bench/provider_scale.py

The database named is dropped and created again. Environment: ANJEON_BENCH_ALERTS (1,000,000),
ANJEON_BENCH_MPS (100), ANJEON_BENCH_QUEUE (segments the fake's queue holds; default 10 s of
MPS), ANJEON_BENCH_WINDOW_S (120). Rows go to var/bench/provider_scale.json.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl
from urllib.request import urlopen

from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.advisories.models import Advisory, AdvisoryRevision
from service.citizens.models import Citizen
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.notifiers.base import OutgoingMessage, Sent
from service.dispatch.notifiers.twilio_sms import TwilioNotifier
from service.dispatch.pacing import SenderRate
from service.dispatch.sms_text import segments
from service.ledger import priority
from service.ledger.enqueue import insert_alerts
from service.migrate import upgrade
from service.privacy import PersonalDataVault

SECRET = "provider-scale-bench-secret-0123456789abcdef"  # noqa: S105 - a scratch database's
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-twilio-auth-token"  # noqa: S105 - the loopback fake's
SENDER = "+15005550006"
ALERTS = int(os.environ.get("ANJEON_BENCH_ALERTS", 1_000_000))
MPS = float(os.environ.get("ANJEON_BENCH_MPS", 100))
QUEUE = int(os.environ.get("ANJEON_BENCH_QUEUE", 10 * MPS))
WINDOW_S = float(os.environ.get("ANJEON_BENCH_WINDOW_S", 120))
WARMUP_S = 15.0
CITIZENS = min(100_000, ALERTS)  # each owed ALERTS / CITIZENS SMS, one per advisory


# ---------------------------------------------------------------- the fake Twilio (own process)


class _Queue:
    """The sender's queue at Twilio: QUEUE segments at most, drained at MPS a second."""

    def __init__(self) -> None:
        self.depth = 0.0
        self.at = time.monotonic()
        self.peak = 0.0
        self.overflows = 0
        self.taken: list[tuple[float, int]] = []  # (when, segments) of every message taken

    def offer(self, count: int) -> bool:
        now = time.monotonic()
        self.depth = max(0.0, self.depth - (now - self.at) * MPS)
        self.at = now
        if self.depth + count > QUEUE:
            self.overflows += 1
            return False
        self.depth += count
        self.peak = max(self.peak, self.depth)
        self.taken.append((time.time(), count))
        return True


_QUEUE = _Queue()
_SIDS = iter(range(1, 10**9))


async def _fake_twilio(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET" and scope["path"] == "/stats":  # what was taken, and when
        payload = json.dumps(
            {"taken": _QUEUE.taken, "peak": _QUEUE.peak, "overflows": _QUEUE.overflows}
        ).encode()
        await _answer(send, 200, payload)
        return
    if scope["method"] == "GET":  # a look-up: this fake keeps no messages
        page = {"messages": [], "next_page_uri": None, "page": 0, "page_size": 50}
        await _answer(send, 200, json.dumps(page).encode())
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    form = dict(parse_qsl(body.decode()))
    if not _QUEUE.offer(segments(form.get("Body", ""))):
        error = {
            "code": 21611,
            "message": "This 'From' number has exceeded the maximum number of queued messages",
            "status": 400,
        }
        await _answer(send, 400, json.dumps(error).encode())
        return
    message = {
        "sid": f"SM{next(_SIDS):032x}",
        "to": form.get("To"),
        "status": "queued",
        "account_sid": ACCOUNT_SID,
    }
    await _answer(send, 201, json.dumps(message).encode())


async def _answer(send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def serve() -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn is up
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(_fake_twilio, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def start_fake() -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    return process, int(process.stdout.readline())


def fake_stats(port: int) -> dict:
    with urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as response:
        return json.load(response)


# ---------------------------------------------------------------- data


def fresh_database(url: str) -> None:
    admin = make_engine(
        make_url(url).set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    name = make_url(url).database
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    upgrade(url)


def seed(url: str) -> float:
    """CITIZENS citizens with a phone, ALERTS / CITIZENS level-3 advisories, and an SMS row
    for each pair in the ledger. Returns the seconds it took."""
    started = time.perf_counter()
    vault = PersonalDataVault(SECRET.encode())
    engine = make_engine(url)
    now = utcnow()
    rounds = -(-ALERTS // CITIZENS)
    with make_session_factory(engine).begin() as session:
        advisories = [_advisory(now, i) for i in range(rounds)]
        session.add_all(advisories)
        for start in range(0, CITIZENS, 10_000):
            session.add_all(
                Citizen(
                    public_id=str(uuid.uuid4()),
                    language="ko",
                    notify_sms=True,
                    notify_email=False,
                    phone_sealed=vault.seal("phone", f"+8210{i:08d}"),
                    phone_hash=vault.lookup_hash("phone", f"+8210{i:08d}"),
                    consent_at=now,
                )
                for i in range(start, min(CITIZENS, start + 10_000))
            )
            session.flush()
        advisory_ids = [a.id for a in advisories]
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM citizen ORDER BY id"))]
        level = priority.of_level("3")
        rows = [(advisory_id, 1, cid, "sms", level) for advisory_id in advisory_ids for cid in ids][
            :ALERTS
        ]
        insert_alerts(conn, rows=rows, now=now)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE alert"))
        conn.execute(text("VACUUM ANALYZE citizen"))
    engine.dispose()
    return time.perf_counter() - started


def _advisory(now, i: int) -> Advisory:
    content = {
        "level": "3",
        "category": "security",
        "title": {"ko": f"방콕 시위 격화 {i}", "en": "Bangkok: protests escalate"},
        "message": {
            "ko": "시위 현장 접근을 삼가시고 현지 당국의 안내를 따르십시오.",
            "en": "Avoid the protests.",
        },
        "area": {"countries": ["TH"]},
        "effective": now.isoformat(),
        "expires": (now + timedelta(days=2)).isoformat(),
    }
    advisory = Advisory(
        public_id=str(uuid.uuid4()),
        source="manual",
        issued_by="bench",
        level="3",
        category="security",
        title_ko=content["title"]["ko"],
        title_en=content["title"]["en"],
        message_ko=content["message"]["ko"],
        message_en=content["message"]["en"],
        area=content["area"],
        effective=now,
        expires=now + timedelta(days=2),
    )
    advisory.revisions.append(
        AdvisoryRevision(revision=1, content=content, changed_by="bench", change="issued")
    )
    return advisory


def ledger(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM alert GROUP BY status")).all()
    engine.dispose()
    return dict(rows)


# ---------------------------------------------------------------- legs


def window_rate(taken: list[list[float]], start: float, end: float) -> float:
    """Segments taken per second between start and end (time.time())."""
    return sum(count for at, count in taken if start <= at < end) / (end - start)


def baseline(port: int, seconds: float) -> dict:
    """The bare SDK from 8 threads paced at MPS segments (a SenderRate of this process alone),
    with a text like the dispatcher's: what the sender allows without the service."""
    notifier = TwilioNotifier(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        sender=SENDER,
        api_base=f"http://127.0.0.1:{port}",
        max_per_second=None,
    )
    pace = SenderRate(key="baseline", per_second=MPS)
    body = (
        "[외교부] 3단계 출국권고: 방콕 시위 격화 0 — 시위 현장 접근을 삼가시고 현지 당국의 "
        "안내를 따르십시오. https://anjeon.example/a/0.x"
    )
    count = segments(body)
    before = fake_stats(port)
    started = time.time()

    def loop(first: int) -> None:
        i = first
        while time.time() - started < seconds:
            pace.wait(count)
            message = OutgoingMessage(
                alert_id=i, channel="sms", to=f"+8219{i:08d}", text=body, reference=f"{i}.x"
            )
            assert isinstance(notifier.send(message), Sent)
            i += 8

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.time()
    after = fake_stats(port)
    return {
        "leg": "baseline: bare SDK paced at MPS",
        "dispatchers": 0,
        "segments_per_message": count,
        "window_s": round(ended - started, 1),
        "segments_per_s": round(window_rate(after["taken"], started, ended), 2),
        "overflows": after["overflows"] - before["overflows"],
    }


def dispatcher_env(url: str, port: int, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANJEON_DATABASE_URL": url,
        "ANJEON_SECRET_KEY": SECRET,
        "ANJEON_SMS_NOTIFIER": "twilio",
        "ANJEON_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "ANJEON_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "ANJEON_TWILIO_FROM": SENDER,
        "ANJEON_TWILIO_API_BASE": f"http://127.0.0.1:{port}",
        "ANJEON_TWILIO_MPS": str(MPS),
        "ANJEON_RATE_LIMIT_STORAGE": redis_url,
        "ANJEON_PUBLIC_BASE_URL": "https://anjeon.example",
        "ANJEON_LOG_LEVEL": "WARNING",
    }


def dispatch_leg(url: str, port: int, redis_url: str, workers: int) -> dict:
    """`workers` anjeon dispatch processes for WARMUP_S + WINDOW_S, then stopped."""
    env = dispatcher_env(url, port, redis_url)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "service.cli", "dispatch"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    errors: list[str] = []
    readers = [
        threading.Thread(target=lambda p=p: errors.append(p.stderr.read()), daemon=True)
        for p in processes
    ]
    for reader in readers:
        reader.start()
    time.sleep(WARMUP_S)
    start_stats = fake_stats(port)
    started = time.time()
    time.sleep(WINDOW_S)
    ended = time.time()
    stats = fake_stats(port)
    for process in processes:
        # `anjeon dispatch` has no graceful stop while a backlog lasts (SIGINT waits for lanes
        # that never run dry): what it holds lapses with its 10 s lease, inside the next leg's
        # warm-up, and is looked up (this fake keeps nothing: not found) before it is sent.
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait(timeout=60)
    for reader in readers:
        reader.join(timeout=10)
    after = ledger(url)
    rate = window_rate(stats["taken"], started, ended)
    return {
        "leg": f"{workers} x anjeon dispatch, rate shared in Redis",
        "dispatchers": workers,
        "window_s": round(ended - started, 1),
        "segments_per_s": round(rate, 2),
        "of_mps": round(rate / MPS, 3),
        "queue_peak": round(stats["peak"], 1),
        "overflows": stats["overflows"] - start_stats["overflows"],
        "overflows_in_warmup": start_stats["overflows"],
        "queued_after": sum(n for s, n in after.items() if s in ("pending", "retry_wait")),
        "warnings": sum(e.count("\n") for e in errors),
    }


def main() -> int:
    if "--serve" in sys.argv:
        serve()
        return 0
    url = os.environ.get("ANJEON_BENCH_DATABASE_URL")
    redis_url = os.environ.get("ANJEON_BENCH_REDIS_URL")
    if not url or not redis_url:
        print("set ANJEON_BENCH_DATABASE_URL (PostgreSQL) and ANJEON_BENCH_REDIS_URL")
        return 2
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match="anjeon:sender/*"):
        client.delete(key)
    client.close()
    print(f"load average before: {os.getloadavg()}")
    fresh_database(url)
    seeded_s = seed(url)
    print(f"seeded {ALERTS:,} SMS for {CITIZENS:,} citizens in {seeded_s:.0f} s: {ledger(url)}")
    server, port = start_fake()
    rows = []
    try:
        rows.append(baseline(port, min(WINDOW_S, 60.0)))
        print(rows[-1], flush=True)
        for workers in (1, 2):
            # A fresh fake queue for each leg: restart the server.
            server.terminate()
            server.wait()
            server, port = start_fake()
            rows.append(dispatch_leg(url, port, redis_url, workers))
            print(rows[-1], flush=True)
    finally:
        server.terminate()
        server.wait()
    load = os.getloadavg()
    result = {
        "measured_at": utcnow().isoformat(timespec="seconds"),
        "mps": MPS,
        "queue_segments": QUEUE,
        "alerts_queued": ALERTS,
        "load_average": [round(x, 2) for x in load],
        "rows": rows,
    }
    path = ROOT / "var" / "bench" / "provider_scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nMPS {MPS:g} segments/s, fake queue {QUEUE} segments, {ALERTS:,} SMS queued")
    for row in rows:
        line = f"{row['leg']:<45} {row['segments_per_s']:>8.2f} segments/s"
        if "of_mps" in row:
            line += f" ({row['of_mps']:.3f} x MPS), queue peak {row['queue_peak']}"
        line += f", overflows {row['overflows']}"
        print(line)
    print(f"load average after: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
