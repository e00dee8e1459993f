"""Dispatch benchmark (`make bench`): drain N pending alerts through (a) a no-op notifier,
(b) the twilio notifier against the loopback fake Twilio with no rate limit, (c) smtp against
aiosmtpd, on SQLite and PostgreSQL; and (d) twilio with ANJEON_TWILIO_MPS=50, to show the
measured rate. In the same run, the baseline each figure is compared with: the same sends made
straight from a thread pool with nothing else (no ledger, no templates). Figures go to stdout
and to var/bench/dispatch.json.

    python bench/dispatch.py [--n 100000] [--backend sqlite|postgresql]

Environment: ANJEON_BENCH_DISPATCH_N (default 100,000), ANJEON_BENCH_DATABASE_URL (PostgreSQL
leg; skipped, and said so, when unset). Each leg runs in its own process (its own peak RSS);
the fake Twilio and the SMTP server run in processes of their own.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl

from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.advisories.models import Advisory, AdvisoryRevision
from service.citizens.models import Citizen
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.dispatcher import Dispatcher, Policy
from service.dispatch.notifiers.base import Notifier, Outcome, OutgoingMessage, Sent
from service.dispatch.notifiers.smtp_email import SmtpNotifier
from service.dispatch.notifiers.twilio_sms import TwilioNotifier
from service.dispatch.render import Renderer
from service.ledger.enqueue import insert_alerts
from service.migrate import drop_schema, upgrade
from service.privacy import PersonalDataVault

SECRET = b"bench-secret-bench-secret-bench-secret-0123"
THREADS = int(os.environ.get("ANJEON_BENCH_THREADS", 8))
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-twilio-auth-token"  # noqa: S105 - the loopback fake's
MPS_N = 500  # alerts in the rate-limited leg: 10 s at 50/s


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
    """n citizens with both channels, and one advisory, committed."""
    if make_url(url).get_backend_name() == "postgresql":
        drop_schema(url)
    upgrade(url)
    vault = PersonalDataVault(SECRET)
    engine = make_engine(url)
    now = utcnow()
    with make_session_factory(engine).begin() as session:
        content = {
            "level": "3",
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
        session.add(advisory)
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


def enqueue(url: str, *, channel: str, n: int) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alert"))
        advisory_id = conn.execute(text("SELECT min(id) FROM advisory")).scalar()
        ids = [r[0] for r in conn.execute(text(f"SELECT id FROM citizen ORDER BY id LIMIT {n}"))]
        rows = [(advisory_id, 1, cid, channel) for cid in ids]
        insert_alerts(conn, rows=rows, now=utcnow())
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE alert"))
    engine.dispose()


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


# ---------------------------------------------------------------- driver


LEGS = ("noop", "twilio", "smtp", "twilio_mps_50")


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
            Path(make_url(urls["sqlite"]).database).unlink(missing_ok=True)
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
