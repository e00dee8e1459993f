"""Dispatch benchmark (`make bench`): drain N pending alerts through (a) a no-op notifier,
(b) the twilio notifier against the loopback fake Twilio with no rate limit, (c) smtp against
aiosmtpd, on SQLite and PostgreSQL; and (d) twilio with ANJEON_TWILIO_MPS=50, to show the
measured rate. In the same run, the baseline each figure is compared with: the same sends made
straight from a thread pool with nothing else (no ledger, no templates).

Urgent first (#12): (e) "urgent_behind_backlog", with the no-op and the twilio notifier: N
level-1 alerts pending and being sent, then a level-4 advisory for 100 citizens; the seconds
from its commit until its last SMS is accepted, beside the same 100 into an empty queue. (f)
"claim": the claim of 500 rows on a ledger of ANJEON_BENCH_CLAIM_ROWS rows (default 1,000,000)
of which a tenth is open, beside the bare UPDATE of the same rows by id. (g) "checkin": a
level-4 advisory sent to N citizens, a third answered: the roll call and one escalation run,
beside the bare read of the advisory's ledger rows.

Figures go to stdout and to var/bench/dispatch.json.

    python bench/dispatch.py [--n 100000] [--backend sqlite|postgresql] [--leg LEG]

Environment: ANJEON_BENCH_DISPATCH_N (default 100,000), ANJEON_BENCH_DATABASE_URL (PostgreSQL
leg; skipped, and said so, when unset), ANJEON_BENCH_CLAIM_ROWS. Each leg runs in its own
process (its own peak RSS); the fake Twilio and the SMTP server run in processes of their own.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.advisories.models import Advisory, AdvisoryRevision
from service.checkin import rollcall
from service.checkin.escalation import escalate
from service.checkin.models import Checkin
from service.citizens.models import Citizen
from service.citizens.service import Registry
from service.db import UTCDateTime, make_engine, make_session_factory, utcnow
from service.dispatch.dispatcher import Dispatcher, Policy
from service.dispatch.notifiers.base import Notifier, Outcome, OutgoingMessage, Sent
from service.dispatch.notifiers.smtp_email import SmtpNotifier
from service.dispatch.notifiers.twilio_sms import TwilioNotifier
from service.dispatch.render import Renderer
from service.ledger import outbox, priority
from service.ledger.enqueue import insert_alerts
from service.migrate import drop_schema, upgrade
from service.privacy import PersonalDataVault

SECRET = b"bench-secret-bench-secret-bench-secret-0123"
THREADS = int(os.environ.get("ANJEON_BENCH_THREADS", 8))
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-twilio-auth-token"  # noqa: S105 - the loopback fake's
MPS_N = 500  # alerts in the rate-limited leg: 10 s at 50/s
URGENT_N = 100  # citizens the level-4 advisory reaches
CLAIM_ROWS = int(os.environ.get("ANJEON_BENCH_CLAIM_ROWS", 1_000_000))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NoopNotifier(Notifier):
    """Accepts everything at once: what is left is the dispatcher's own cost."""

    name = "noop"
    channels = ("sms", "email")

    def send(self, message: OutgoingMessage) -> Outcome:
        return Sent(provider_ref="noop")


class TimedNotifier(Notifier):
    """Wraps a notifier and notes when each send returned (the rate-limited leg)."""

    def __init__(self, inner: Notifier) -> None:
        self.inner, self.name, self.channels = inner, inner.name, inner.channels
        self.max_per_second = inner.max_per_second
        # As the notifier it wraps: a settle time makes the dispatcher mark sends before they go.
        self.settle_s = inner.settle_s
        self.times: list[float] = []

    def send(self, message: OutgoingMessage) -> Outcome:
        self.times.append(time.monotonic())  # when the request starts: what a provider counts
        return self.inner.send(message)


# ---------------------------------------------------------------- servers (own processes)


def serve(kind: str) -> None:
    """Minimal loopback answerers, so that the server is not what is measured: for Twilio an
    ASGI app under uvicorn (httptools) answering like the Messages API; for SMTP aiosmtpd with
    a handler that accepts and drops. (The tests' fakes record and script; these only answer.)"""
    if kind == "twilio":
        import socket

        import uvicorn

        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted
        sock.bind(("127.0.0.1", 0))
        print(sock.getsockname()[1], flush=True)
        config = uvicorn.Config(_fake_twilio, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
        return
    from aiosmtpd.controller import Controller

    class Accept:
        async def handle_DATA(self, server, session, envelope) -> str:
            return "250 OK"

    port = _free_port()
    controller = Controller(Accept(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    controller.stop()


_SIDS = iter(range(1, 10**9))


async def _fake_twilio(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    form = dict(parse_qsl(body.decode()))
    payload = json.dumps(
        {
            "sid": f"SM{next(_SIDS):032x}",
            "to": form.get("To"),
            "body": form.get("Body"),
            "status": "queued",
            "account_sid": ACCOUNT_SID,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, int(process.stdout.readline())


# ---------------------------------------------------------------- data


def seed(url: str, n: int) -> None:
    """n citizens with both channels, and three advisories, committed: level 3 (the one the
    throughput legs send), then level 1 and level 4 (the urgent-first legs)."""
    if make_url(url).get_backend_name() == "postgresql":
        drop_schema(url)
    else:  # a new file: `--seed` alone, run again, met the last run's citizens
        Path(make_url(url).database).unlink(missing_ok=True)
    upgrade(url)
    vault = PersonalDataVault(SECRET)
    engine = make_engine(url)
    now = utcnow()
    with make_session_factory(engine).begin() as session:
        for level in ("3", "1", "4"):
            session.add(_advisory(level, now))
            session.flush()
        for start in range(0, n, 10_000):
            session.add_all(
                Citizen(
                    public_id=str(uuid.uuid4()),
                    language="ko" if i % 3 else "en",
                    notify_sms=True,
                    notify_email=True,
                    phone_sealed=vault.seal("phone", f"+8210{i:08d}"),
                    phone_hash=vault.lookup_hash("phone", f"+8210{i:08d}"),
                    email_sealed=vault.seal("email", f"c{i}@example.com"),
                    email_hash=vault.lookup_hash("email", f"c{i}@example.com"),
                    consent_at=now,
                )
                for i in range(start, min(n, start + 10_000))
            )
            session.flush()
    engine.dispose()


def _advisory(level: str, now: datetime) -> Advisory:
    content = {
        "level": level,
        "category": "security",
        "title": {"ko": "방콕 시위 격화", "en": "Bangkok: protests escalate"},
        "message": {"ko": "시위 현장 접근을 삼가십시오.", "en": "Avoid the protests."},
        "area": {"countries": ["TH"]},
        "effective": now.isoformat(),
        "expires": (now + timedelta(days=2)).isoformat(),
    }
    advisory = Advisory(
        public_id=str(uuid.uuid4()),
        source="manual",
        issued_by="bench",
        level=level,
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


def enqueue(url: str, *, channel: str, n: int, level: str = "3") -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alert"))
        advisory_id = advisory_of(conn, level)
        ids = [r[0] for r in conn.execute(text(f"SELECT id FROM citizen ORDER BY id LIMIT {n}"))]
        rows = [(advisory_id, 1, cid, channel, priority.of_level(level)) for cid in ids]
        insert_alerts(conn, rows=rows, now=utcnow())
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE alert"))
    engine.dispose()


def advisory_of(conn, level: str) -> int:
    return conn.execute(
        text("SELECT min(id) FROM advisory WHERE level = :level"), {"level": level}
    ).scalar_one()


def open_rows(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM alert GROUP BY status")).all()
    engine.dispose()
    return dict(rows)


# ---------------------------------------------------------------- legs


def make_notifier(leg: str, port: int) -> Notifier:
    if leg == "noop":
        return NoopNotifier()
    if leg.startswith("twilio"):
        return TwilioNotifier(
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            sender="+15005550006",
            api_base=f"http://127.0.0.1:{port}",
            max_per_second=50 if leg == "twilio_mps_50" else None,
        )
    return SmtpNotifier(host="127.0.0.1", port=port, sender="alerts@anjeon.test")


def baseline(notifier: Notifier, channel: str, n: int) -> float:
    """The same sends straight from the thread pool: no database, no templates."""
    messages = [
        OutgoingMessage(
            alert_id=i,
            channel=channel,
            to=f"+8219{i:08d}" if channel == "sms" else f"b{i}@example.com",
            text="방콕 시위 격화 https://anjeon.test/a/1.x",
            subject="방콕",
            reference=f"{i}.x",
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(notifier.send, messages))
    assert all(isinstance(o, Sent) for o in outcomes), outcomes[:3]
    return n / (time.perf_counter() - started)


def run_leg(url: str, backend: str, leg: str, n: int) -> dict:
    channel = "email" if leg == "smtp" else "sms"
    count = MPS_N if leg == "twilio_mps_50" else n
    server, port = (
        start_server("smtp" if leg == "smtp" else "twilio") if leg != "noop" else (None, 0)
    )
    try:
        notifier = make_notifier(leg, port)
        timed = TimedNotifier(notifier)
        base_rate = (
            baseline(notifier, channel, min(count, 5_000)) if leg != "twilio_mps_50" else None
        )
        enqueue(url, channel=channel, n=count)
        engine = make_engine(url)
        dispatcher = Dispatcher(
            make_session_factory(engine),
            notifiers={channel: timed},
            renderer=Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3),
            vault=PersonalDataVault(SECRET),
            public_base_url="https://anjeon.example",
            policy=Policy(batch=500, threads=THREADS, lease_s=120),
        )
        started = time.perf_counter()
        tally = dispatcher.drain()
        seconds = time.perf_counter() - started
        dispatcher.close()
        engine.dispose()
    finally:
        if server:
            server.terminate()
            server.wait()
    assert tally.by_status == {"sent": count}, tally
    assert open_rows(url) == {"sent": count}
    row = {
        "name": leg,
        "backend": backend,
        "n": count,
        "seconds": round(seconds, 3),
        "per_s": round(count / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_per_s": round(base_rate, 1) if base_rate else None,
    }
    if leg == "twilio_mps_50":
        times = timed.times
        row["measured_mps"] = round((len(times) - 1) / (times[-1] - times[0]), 2)
        row["max_in_any_1s"] = max(
            sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)
        )
    return row


class Accepted(Notifier):
    """Wraps a notifier and notes when each alert's send came back accepted."""

    def __init__(self, inner: Notifier) -> None:
        self.inner, self.name, self.channels = inner, inner.name, inner.channels
        self.max_per_second = inner.max_per_second
        self.at: dict[int, float] = {}

    def send(self, message: OutgoingMessage) -> Outcome:
        outcome = self.inner.send(message)
        if isinstance(outcome, Sent):
            self.at[message.alert_id] = time.perf_counter()
        return outcome


def urgent_latency(url: str, notifier: Notifier, *, backlog: int) -> dict:
    """Seconds from the commit of a level-4 advisory's URGENT_N alerts until the last is
    accepted, while `backlog` level-1 alerts are pending and being sent (0: an empty queue).
    The dispatcher runs as the service runs it: batch after batch, woken after a commit."""
    enqueue(url, channel="sms", n=backlog, level="1")
    engine = make_engine(url)
    accepted = Accepted(notifier)
    dispatcher = Dispatcher(
        make_session_factory(engine),
        notifiers={"sms": accepted},
        renderer=Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3),
        vault=PersonalDataVault(SECRET),
        public_base_url="https://anjeon.example",
        policy=Policy(batch=500, threads=THREADS, lease_s=120),
    )
    with engine.connect() as conn:
        advisory_id = advisory_of(conn, "4")
        ids = [r[0] for r in conn.execute(text("SELECT id FROM citizen ORDER BY id"))]
    step = max(1, len(ids) // URGENT_N)
    rows = [(advisory_id, 1, cid, "sms", priority.of_level("4")) for cid in ids[::step]]
    stop, woken = threading.Event(), threading.Event()

    def run() -> None:
        while not stop.is_set():
            if not dispatcher.step(channels=["sms"]).claimed:
                woken.wait(0.05)
                woken.clear()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        # Mid-burst, near the worst moment: just after the second batch of the backlog was
        # claimed, so the urgent alerts find almost a whole batch ahead of them.
        while len(accepted.at) < min(510, backlog // 4):
            time.sleep(0.005)
        with engine.begin() as conn:
            insert_alerts(conn, rows=rows[:URGENT_N], now=utcnow())
        committed = time.perf_counter()
        woken.set()
        sent_before = len(accepted.at)
        with engine.connect() as conn:
            ahead = conn.execute(
                text(
                    "SELECT count(*) FROM alert WHERE advisory_id <> :a "
                    "AND status IN ('pending', 'claimed')"
                ),
                {"a": advisory_id},
            ).scalar_one()
            urgent = [
                r[0]
                for r in conn.execute(
                    text("SELECT id FROM alert WHERE advisory_id = :a"), {"a": advisory_id}
                )
            ]
        deadline = committed + 600
        while not all(i in accepted.at for i in urgent) and time.perf_counter() < deadline:
            time.sleep(0.002)
    finally:
        stop.set()
        worker.join()
        dispatcher.close()
        engine.dispose()
    assert len(urgent) == URGENT_N and all(i in accepted.at for i in urgent), "urgent unsent"
    last = max(accepted.at[i] for i in urgent)
    urgent_set = set(urgent)
    meanwhile = sum(
        1 for i, t in accepted.at.items() if committed < t <= last and i not in urgent_set
    )
    return {
        "seconds": round(last - committed, 3),
        "backlog_ahead": ahead,
        "backlog_sent_before": sent_before,
        "backlog_sent_meanwhile": meanwhile,
    }


def run_urgent(url: str, backend: str, leg: str, n: int) -> dict:
    kind = leg.removeprefix("urgent_")
    server, port = start_server("twilio") if kind == "twilio" else (None, 0)
    try:
        base = urgent_latency(url, make_notifier(kind, port), backlog=0)
        row = urgent_latency(url, make_notifier(kind, port), backlog=n)
    finally:
        if server:
            server.terminate()
            server.wait()
    return {
        "name": "urgent_behind_backlog",
        "backend": backend,
        "notifier": kind,
        "n": n,
        "urgent": URGENT_N,
        **row,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_s": base["seconds"],  # the same 100 into an empty queue
        "goal_s": 2.0,
    }


def run_claim(url: str, backend: str, rows_n: int) -> dict:
    """A claim of 500 on a ledger of rows_n rows, a tenth open (classes mixed, level 1 the
    most), timed 20 times; each batch is then marked sent, as the dispatcher would."""
    engine = make_engine(url)
    settled = rows_n - rows_n // 10
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alert"))
        rows = []
        for i in range(rows_n):
            j = i - settled
            cls = 4 if j < 0 or j % 25 > 2 else (1, 2, 3)[j % 25]
            rows.append((1 + i // 100_000, 1, i, "sms", cls))
        insert_alerts(conn, rows=rows, now=utcnow())
        conn.execute(text("UPDATE alert SET status = 'sent' WHERE citizen_id < :s"), {"s": settled})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE alert"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    factory = make_session_factory(engine)
    claims, bare = [], []
    bare_update = text(
        "UPDATE alert SET status = 'claimed', attempts = attempts + 1, due_at = :t, "
        "claimed_by = 'bench', updated_at = :t WHERE id IN :ids RETURNING id"
    ).bindparams(bindparam("ids", expanding=True), bindparam("t", type_=UTCDateTime()))
    for _ in range(20):
        with factory.begin() as session:
            started = time.perf_counter()
            got = outbox.claim(
                session, channel="sms", now=utcnow(), limit=500, lease_s=120, worker="bench"
            )
            claims.append(time.perf_counter() - started)
        ids = [c.id for c in got]
        with factory.begin() as session:  # the floor: the same rows, chosen already
            session.execute(
                text("UPDATE alert SET status = 'pending' WHERE id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": ids},
            )
        with factory.begin() as session:
            started = time.perf_counter()
            session.execute(bare_update, {"ids": ids, "t": utcnow()}).all()
            bare.append(time.perf_counter() - started)
            session.execute(
                text("UPDATE alert SET status = 'sent' WHERE id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": ids},
            )
    engine.dispose()
    return {
        "name": "claim",
        "backend": backend,
        "n": rows_n,
        "open": rows_n - settled,
        "batch": 500,
        "median_ms": round(statistics.median(claims) * 1000, 2),
        "max_ms": round(max(claims) * 1000, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_median_ms": round(statistics.median(bare) * 1000, 2),
    }


# ---------------------------------------------------------------- driver


LEGS = (
    "noop",
    "twilio",
    "smtp",
    "twilio_mps_50",
    "urgent_noop",
    "urgent_twilio",
    "claim",
    "checkin",
)


def run_checkin(url: str, backend: str, n: int) -> dict:
    """The check-in's reads at scale: a level-4 advisory sent by SMS to n citizens 2 hours ago,
    a third of them answered. Times the roll call (counts and a first page) and one run of the
    escalation job (which queues the second ask of the rest), beside the bare read of the
    advisory's ledger rows they both start from."""
    engine = make_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alert"))
        conn.execute(text("DELETE FROM checkin"))
        advisory_id = advisory_of(conn, "4")
        ids = [r[0] for r in conn.execute(text(f"SELECT id FROM citizen ORDER BY id LIMIT {n}"))]
        rows = [(advisory_id, 1, cid, "sms", priority.of_level("4")) for cid in ids]
        insert_alerts(conn, rows=rows, now=now - timedelta(hours=2))
        conn.execute(
            text("UPDATE alert SET status = 'sent', sent_at = :at").bindparams(
                bindparam("at", type_=UTCDateTime())
            ),
            {"at": now - timedelta(hours=2)},
        )
        conn.execute(
            Checkin.__table__.insert(),
            [
                {
                    "advisory_id": advisory_id,
                    "citizen_id": cid,
                    "answer": "safe" if i % 6 else "help",
                    "channel": "sms",
                    "answer_id": i + 1,
                    "answered_at": now - timedelta(hours=1),
                    "duty_notified_at": now,
                }
                for i, cid in enumerate(ids[::3])
            ],
        )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE alert"))
            conn.execute(text("VACUUM ANALYZE checkin"))
    factory = make_session_factory(engine)
    registry = Registry(
        vault=PersonalDataVault(SECRET), geocoder=None, phone_region="KR", max_stays=20
    )  # type: ignore[arg-type]
    with factory() as session:
        started = time.perf_counter()
        list(
            session.execute(
                text(f"SELECT citizen_id, status FROM alert WHERE advisory_id = {advisory_id}")
            )
        )
        baseline = time.perf_counter() - started
        advisory = session.get(Advisory, advisory_id)
        started = time.perf_counter()
        found = rollcall.roll_call(
            session,
            advisory=advisory,
            registry=registry,
            answer=None,
            country=None,
            limit=100,
            offset=0,
            now=now,
        )
        roll_s = time.perf_counter() - started
        started = time.perf_counter()
        queued = escalate(session, after=timedelta(minutes=60), rounds=2, now=now)
        escalate_s = time.perf_counter() - started
        session.rollback()
    engine.dispose()
    assert found.counts["safe"] + found.counts["help"] == len(ids[::3]), found.counts
    assert queued == len(ids) - len(ids[::3]), queued
    return {
        "name": "checkin",
        "backend": backend,
        "n": len(ids),
        "answered": len(ids[::3]),
        "rollcall_s": round(roll_s, 3),
        "escalate_s": round(escalate_s, 3),
        "escalated": queued,
        "baseline_read_s": round(baseline, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--n", type=int, default=int(os.environ.get("ANJEON_BENCH_DISPATCH_N", 100_000))
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    parser.add_argument("--leg", choices=LEGS)
    parser.add_argument("--serve", choices=("twilio", "smtp"))
    parser.add_argument("--seed", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    urls = {"sqlite": f"sqlite:///{ROOT / 'var' / 'bench' / 'dispatch.db'}"}
    if os.environ.get("ANJEON_BENCH_DATABASE_URL"):
        urls["postgresql"] = os.environ["ANJEON_BENCH_DATABASE_URL"]
    if args.seed:
        seed(urls[args.backend], args.n)
        return 0
    if args.leg == "checkin":
        print(json.dumps(run_checkin(urls[args.backend], args.backend, args.n)))
        return 0
    if args.leg == "claim":
        print(json.dumps(run_claim(urls[args.backend], args.backend, CLAIM_ROWS)))
        return 0
    if args.leg and args.leg.startswith("urgent_"):
        print(json.dumps(run_urgent(urls[args.backend], args.backend, args.leg, args.n)))
        return 0
    if args.leg:
        print(json.dumps(run_leg(urls[args.backend], args.backend, args.leg, args.n)))
        return 0
    backends = [args.backend] if args.backend else list(urls)
    if "postgresql" not in urls:
        print("PostgreSQL leg skipped: ANJEON_BENCH_DATABASE_URL is not set")
    results = []
    for backend in backends:
        if backend == "sqlite":
            (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
        me = [sys.executable, __file__, "--backend", backend, "--n", str(args.n)]
        subprocess.run([*me, "--seed"], check=True)
        for leg in LEGS:
            out = subprocess.run([*me, "--leg", leg], check=True, stdout=subprocess.PIPE, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print_row(results[-1])
    path = ROOT / "var" / "bench" / "dispatch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.backend and path.exists():  # keep the other backend's figures from its own run
        kept = [r for r in json.loads(path.read_text()) if r["backend"] != args.backend]
        results = kept + results
    path.write_text(json.dumps(results, indent=2))
    print(f"figures written to {path}")
    return 0


def print_row(row: dict) -> None:
    if row["name"] == "urgent_behind_backlog":
        print(
            f"{row['backend']:<10} {row['name']} ({row['notifier']}) backlog={row['n']}: "
            f"last of {row['urgent']} level-4 SMS accepted {row['seconds']:.3f} s after commit "
            f"({row['backlog_ahead']} level-1 ahead, {row['backlog_sent_meanwhile']} of them "
            f"sent meanwhile)  baseline (empty queue) {row['baseline_s']:.3f} s  "
            f"goal <= {row['goal_s']} s",
            flush=True,
        )
        return
    if row["name"] == "checkin":
        print(
            f"{row['backend']:<10} check-in, {row['n']} asked, {row['answered']} answered: "
            f"roll call {row['rollcall_s']:.3f} s, escalation run {row['escalate_s']:.3f} s "
            f"({row['escalated']} asked again)  baseline (read the advisory's rows) "
            f"{row['baseline_read_s']:.3f} s",
            flush=True,
        )
        return
    if row["name"] == "claim":
        print(
            f"{row['backend']:<10} claim of {row['batch']} on {row['n']} rows "
            f"({row['open']} open): median {row['median_ms']} ms, max {row['max_ms']} ms  "
            f"baseline (bare UPDATE of the same rows) {row['baseline_median_ms']} ms",
            flush=True,
        )
        return
    line = (
        f"{row['backend']:<10} {row['name']:<14} n={row['n']:<7} {row['seconds']:>8.2f} s "
        f"{row['per_s']:>9.1f}/s  peak RSS {row['peak_rss_mb']:.0f} MB"
    )
    if row.get("baseline_per_s"):
        line += f"  baseline {row['baseline_per_s']:.0f}/s"
    if "measured_mps" in row:
        line += f"  measured {row['measured_mps']}/s, max {row['max_in_any_1s']} in any 1 s"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
