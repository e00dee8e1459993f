"""Deployment shapes (issue #15 item 1), as real processes on one scratch PostgreSQL database and
one Redis: two `anjeon serve` API processes (their scheduler off), two `anjeon dispatch` workers
and two `anjeon schedule` processes, against the fake Twilio and the SMTP sink. One scenario:
citizens register and verify both contacts (codes read at the fakes), a level-3 advisory is
issued and approved by a second consul (four eyes) and asks "are you safe?", every citizen
replies by a signed inbound SMS, and a level-2 advisory becomes effective a few seconds after it
is issued, so the sweep is what sends it. Two holders are stopped with SIGSTOP past their lease:
a dispatcher while it holds SMS claims (held at the fake Twilio), and the scheduler holding
the sweep's lease; each is replaced, then woken with SIGCONT. The dispatcher is stopped while
each sending thread of both dispatchers waits on a request the fake holds, and the fake lets
them go once it is stopped. A stop between a thread's last
check of its claim and its request leaving the process (the Twilio SDK's milliseconds) cannot
be fenced: the stand-in looks the message up, finds nothing and sends, and the woken request
goes too. Stopped at once after its claim, 2 SMS went twice in 4 of 8 runs, until the
dispatcher counted its lease from before the claim (the last test here makes that pause certain).

Proved: every alert exactly once at the fakes (no duplicate, none missing, each Twilio SID and
e-mail Message-ID one sent row of the ledger), the same sends as the same scenario in one
`anjeon serve` process, and every scheduled job run by one holder at a time (each committed
run logs its holder, when it took the lease and when it committed; no two runs of a job
overlap). Redis keys are this run's own (a new secret key) and lapse with their windows."""

import itertools
import json
import logging
import re
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service import lease
from service.advisories.models import Advisory
from service.checkin.models import Checkin
from service.cli import build_parser
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.dispatcher import Dispatcher
from service.dispatch.models import DispatcherWorker
from service.ledger.models import Alert
from service.privacy import PersonalDataVault
from service.scheduler import LeaseLost, fenced_by_lease
from tests.advisories.builders import advisory_body
from tests.builders import citizen_body
from tests.checkin.conftest import INBOUND, inbound_form, signed
from tests.conftest import PG_URL, TEST_SECRET, make_settings, redis_url_for_tests
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.fake_twilio import Answer, FakeTwilio
from tests.dispatch.seed import phone_of, scratch_database, seed_pending
from tests.dispatch.smtp_sink import SmtpSink
from tests.loopback_server import free_port
from tests.operations.service_process import (
    ROOT,
    consul_key,
    e164,
    log_lines,
    log_tail,
    processes,
    service_env,
    wait_ready,
    wait_until,
)

# In CI a missing ANJEON_TEST_DATABASE_URL fails the session (tests/conftest.py), never skips.
postgresql_only = pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set")

CITIZENS = 8
STALL_S = 3.0  # how late the fake Twilio answers each of the first advisory's SMS
TOKYO = {"lat": 35.5, "lon": 139.5}  # inside advisory_body()'s square
# Generous, on a busy 2-core machine: seven processes import the service and load the country
# boundaries at once (~7 s of CPU each).
START_S = 240
WAIT_S = 90  # for anything else the processes do
SETTLED_S = 3.0  # the fake's count of held SMS unchanged this long: no thread is on its way
CODE = re.compile(r"\b(\d{6})\b")


def _env(url: str, twilio: FakeTwilio, smtp: SmtpSink, **settings: object) -> dict[str, str]:
    return service_env(
        url,
        twilio,
        smtp,
        secret_key=secrets.token_urlsafe(40),  # this run's keys in Redis are its own
        verification="required",
        approval="required",
        rate_limit_storage=redis_url_for_tests("the scaled deployment's test"),
        rate_limit_prefix="10000/hour",
        rate_limit_prefix_client="10000/hour",
        rate_limit_client_unverified="10000/hour",
        sms_daily_budget=1_000_000,  # one key a day in Redis, shared by every run
        dispatch_interval_s=0.5,
        # Not shorter: a live dispatcher starved of CPU for a quarter of its lease (the margin
        # it checks before each send) lost claims and sent 2 SMS twice at 2 s, load average 13.
        dispatch_lease_s=6,
        dispatch_batch=4,
        dispatch_threads=2,
        # Past any wait for the fault run's held SMS: a request the client gave up on would
        # free its thread while the fake still counts it held.
        twilio_timeout_s=WAIT_S,
        # The fake makes a message as its request comes: a send in flight when its dispatcher
        # stopped is looked up this soon, not twice the timeout after it began.
        twilio_settle_s=5,
        sweep_interval_s=1,  # leases of 3 s
        job_interval_s=2,
        **settings,
    )


@dataclass
class Run:
    """One scenario's processes, fakes and what it registered."""

    factory: sessionmaker[Session]
    bases: list[str]
    twilio: FakeTwilio
    smtp: SmtpSink
    logs: Path
    dispatchers: list[subprocess.Popen] = field(default_factory=list)
    schedulers: list[subprocess.Popen] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)  # E.164, by citizen number
    emails: list[str] = field(default_factory=list)
    codes_sent: tuple[int, int] = (0, 0)  # SMS and e-mails before the first alert
    signals: list[tuple[str, int, float]] = field(default_factory=list)  # (what, pid, monotonic)
    env: dict[str, str] = field(default_factory=dict)

    def session(self) -> Session:
        return self.factory()

    def base(self, n: int) -> str:
        return self.bases[n % len(self.bases)]


def _register_and_verify(run: Run) -> None:
    with httpx.Client(timeout=60) as client:
        for n in range(CITIZENS):
            body = citizen_body(location=TOKYO)
            made = client.post(f"{run.base(n)}/v1/citizens", json=body)
            assert made.status_code == 201, made.text
            phone, email = e164(body["phone"]), body["email"]
            # The codes go after the answer (a background task).
            sms = _found(lambda p=phone: run.twilio.bodies_to(p) or None, "no code", run.logs)
            sms_code = CODE.search(sms[-1]).group(1)
            mails = _found(lambda e=email: run.smtp.to(e) or None, "no code", run.logs)
            mail = mails[-1].get_body(("plain",)).get_content()
            auth = {"Authorization": f"Bearer {made.json()['manage_token']}"}
            for i, (channel, code) in enumerate(
                [("sms", sms_code), ("email", CODE.search(mail).group(1))]
            ):
                verified = client.post(
                    f"{run.base(n + i)}/v1/citizens/{made.json()['id']}/verify",
                    json={"channel": channel, "code": code},
                    headers=auth,
                )
                assert verified.status_code == 200, verified.text
            run.phones.append(phone)
            run.emails.append(email)
    run.codes_sent = (len(run.twilio.messages), len(run.smtp.received))


def _sent(run: Run, advisory: str) -> bool:
    with run.session() as session:
        statuses = session.execute(
            select(Alert.status, func.count())
            .where(Alert.advisory_id == _advisory_id(session, advisory))
            .group_by(Alert.status)
        ).all()
    return dict(statuses) == {"sent": 2 * CITIZENS}


def _advisory_id(session: Session, public_id: str) -> int:
    return session.scalar(select(Advisory.id).where(Advisory.public_id == public_id))


@contextmanager
def _stopped(run: Run, process: subprocess.Popen):
    """SIGSTOP, as a stalled VM or a debugger would; SIGCONT at the end whatever happens."""
    process.send_signal(signal.SIGSTOP)
    run.signals.append(("SIGSTOP", process.pid, time.monotonic()))
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)
        run.signals.append(("SIGCONT", process.pid, time.monotonic()))


def _found(probe, what: str, logs: Path, state=lambda: ""):
    """The first non-None answer of probe() within WAIT_S; `state()` is said if none came."""
    deadline = time.monotonic() + WAIT_S
    while (found := probe()) is None:
        assert time.monotonic() < deadline, f"{what} ({state()}):\n{log_tail(logs)}"
        time.sleep(0.02)
    return found


def _statuses(run: Run, advisory: str) -> list[tuple[str, str, str | None]]:
    """(channel, status, claimed by) of the advisory's alerts."""
    with run.session() as session:
        rows = session.execute(
            select(Alert.channel, Alert.status, Alert.claimed_by)
            .where(Alert.advisory_id == _advisory_id(session, advisory))
            .order_by(Alert.channel, Alert.id)
        ).all()
    return [tuple(row) for row in rows]


def _dispatcher_holding_sms(
    run: Run, advisory: str, seen: dict[str, float]
) -> subprocess.Popen | None:
    """The dispatcher holding SMS claims once the advisory's e-mails are all recorded (so that
    none is in flight when it stops: an e-mail cannot be looked up, and would go again), while
    every sending thread of both dispatchers waits on a request the fake Twilio holds (so that
    none is between its last check of the claim and its request: see the docstring above).
    A dispatcher starved of CPU past a quarter of its lease skips its sends instead (they lapse
    unsent, and say so in its log) while its other threads wait: then the held count that has
    not moved for SETTLED_S is every thread that will send (a CI run waited 90 s for 4). A
    thread that skipped and goes on to its next send moves the count, and the wait starts
    again; one stalled 3 s between its last check and its request is the race above."""
    holding = run.twilio.holding
    if holding != seen.get("holding"):
        seen.update(holding=holding, since=time.monotonic())
    settled = (
        holding > 0
        and time.monotonic() - seen["since"] >= SETTLED_S
        # Skipped before the send, or as its first byte was to leave.
        and bool(log_lines(run.logs, "send skipped") or log_lines(run.logs, "send not started"))
    )
    if holding < 2 * int(run.env["ANJEON_DISPATCH_THREADS"]) and not settled:
        return None
    with run.session() as session:
        advisory_id = _advisory_id(session, advisory)
        mail_open = session.scalar(
            select(func.count()).where(
                Alert.advisory_id == advisory_id, Alert.channel == "email", Alert.status != "sent"
            )
        )
        holders = session.scalars(
            select(DispatcherWorker.pid).where(
                DispatcherWorker.name.in_(
                    select(Alert.claimed_by).where(
                        Alert.advisory_id == advisory_id,
                        Alert.channel == "sms",
                        Alert.status == "claimed",
                    )
                )
            )
        ).all()
    by_pid = {p.pid: p for p in run.dispatchers}
    return next((by_pid[pid] for pid in holders if pid in by_pid), None) if not mail_open else None


def _claimed_by(run: Run, pid: int) -> int:
    with run.session() as session:
        names = select(DispatcherWorker.name).where(DispatcherWorker.pid == pid)
        return session.scalar(
            select(func.count()).where(Alert.status == "claimed", Alert.claimed_by.in_(names))
        )


def _sweep_holder(run: Run) -> str | None:
    with run.session() as session:
        return session.scalar(
            select(lease.SchedulerLease.holder).where(
                lease.SchedulerLease.name == "geomatch-sweep",
                lease.SchedulerLease.expires_at > utcnow(),
            )
        )


def _pid_of(holder: str) -> int:
    return int(holder.rsplit(":", 2)[1])  # lease.PROCESS_ID: host:pid:random


def _issue(run: Run, n: int, key: dict[str, str], **fields: object) -> dict:
    made = httpx.post(
        f"{run.base(n)}/v1/advisories", json=advisory_body(**fields), headers=key, timeout=60
    )
    assert made.status_code == 201, made.text
    return made.json()


def _scenario(run: Run, consuls: list[dict[str, str]], *, faults: bool) -> dict[str, str]:
    """Register, an approved level-3 advisory ALPHA, replies, a level-2 advisory BRAVO sent by
    the sweep; with `faults`, a dispatcher and the sweep's holder stopped past their leases."""
    _register_and_verify(run)
    # Each SMS answered 3 s late: the claims are held, and the requests in flight for a while.
    # With faults, held until a dispatcher is stopped: waiting for the moment when every
    # sending thread waits on a 3 s stall, a CI run starved of CPU missed it for 90 s.
    gate = threading.Event()
    late = Answer(hold=gate) if faults else Answer(stall_s=STALL_S)
    run.twilio.script(None, *[late] * CITIZENS)
    try:
        return _alpha_then_bravo(run, consuls, faults=faults, gate=gate)
    finally:
        gate.set()


def _alpha_then_bravo(
    run: Run, consuls: list[dict[str, str]], *, faults: bool, gate: threading.Event
) -> dict[str, str]:
    alpha = _issue(run, 0, consuls[0], level=3, title={"ko": "도쿄 ALPHA", "en": "Tokyo ALPHA"})
    assert alpha["status"] == "pending_approval"
    approved = httpx.post(
        f"{run.base(1)}/v1/advisories/{alpha['id']}/approve",
        json={"proposal_id": alpha["pending"]["id"]},
        headers=consuls[1],
        timeout=60,
    )
    assert approved.status_code == 200, approved.text
    if faults:
        seen: dict[str, float] = {}
        holder = _found(
            lambda: _dispatcher_holding_sms(run, alpha["id"], seen),
            "no SMS held",
            run.logs,
            state=lambda: f"{run.twilio.holding} held; {_statuses(run, alpha['id'])}",
        )
        with _stopped(run, holder):
            held = _claimed_by(run, holder.pid)
            gate.set()  # the other dispatcher's requests are answered; the stopped one's wait
            assert wait_until(lambda: _sent(run, alpha["id"]), WAIT_S), log_tail(run.logs)
        print(f"SCALED a dispatcher stopped holding {held} SMS claims; the other sent them")
        assert held > 0, "it finished its claims before it stopped"
    assert wait_until(lambda: _sent(run, alpha["id"]), WAIT_S), log_tail(run.logs)

    for n, phone in enumerate(run.phones):
        form = inbound_form(phone, "1")
        replied = httpx.post(f"{run.base(n)}{INBOUND}", data=form, headers=signed(form), timeout=60)
        assert replied.status_code == 200, replied.text
    with run.session() as session:
        answers = session.scalars(
            select(Checkin.answer).where(Checkin.advisory_id == _advisory_id(session, alpha["id"]))
        ).all()
    assert Counter(answers) == {"safe": CITIZENS}

    # Effective in a few seconds: not sent when issued, but by a sweep once it is in force.
    effective = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    stop = _pid_of(_found(lambda: _sweep_holder(run), "no sweep holder", run.logs))
    paused = next((p for p in run.schedulers if p.pid == stop), None) if faults else None
    if paused:
        paused.send_signal(signal.SIGSTOP)
    try:
        bravo = _issue(
            run, 1, consuls[0], title={"ko": "도쿄 BRAVO", "en": "Tokyo BRAVO"}, effective=effective
        )
        assert bravo["status"] == "active"
        assert wait_until(lambda: _sent(run, bravo["id"]), WAIT_S), log_tail(run.logs)
        if paused:
            assert _pid_of(_sweep_holder(run) or "?:0:?") != paused.pid
    finally:
        if paused:
            paused.send_signal(signal.SIGCONT)
    if faults:
        assert paused, f"the sweep's holder {stop} is not one of the schedulers"
        time.sleep(3)  # the woken ones try again: anything sent twice would arrive now
    return {"ALPHA": alpha["id"], "BRAVO": bravo["id"]}


def _sends(run: Run) -> Counter:
    """(citizen number, advisory, channel) of every alert at the fakes, codes left out."""
    sends: Counter = Counter()
    for sms in run.twilio.messages[run.codes_sent[0] :]:
        label = "ALPHA" if "ALPHA" in sms["body"] else "BRAVO" if "BRAVO" in sms["body"] else "?"
        sends[(run.phones.index(sms["to"]), label, "sms")] += 1
    for mail in run.smtp.received[run.codes_sent[1] :]:
        text = str(mail["Subject"]) + mail.get_body(("plain",)).get_content()
        label = "ALPHA" if "ALPHA" in text else "BRAVO" if "BRAVO" in text else "?"
        sends[(run.emails.index(mail["To"]), label, "email")] += 1
    return sends


def _check_ledger(run: Run, advisories: dict[str, str]) -> None:
    """Each message at the fakes is one sent row of the ledger, and each sent row one message."""
    with run.session() as session:
        ids = [_advisory_id(session, public_id) for public_id in advisories.values()]
        rows = session.execute(
            select(Alert.channel, Alert.status, Alert.provider_ref).where(
                Alert.advisory_id.in_(ids)
            )
        ).all()
    assert Counter((channel, status) for channel, status, _ in rows) == {
        ("sms", "sent"): 2 * CITIZENS,
        ("email", "sent"): 2 * CITIZENS,
    }
    sids = [m["sid"] for m in run.twilio.messages[run.codes_sent[0] :]]
    message_ids = [m["Message-ID"] for m in run.smtp.received[run.codes_sent[1] :]]
    assert Counter(message_ids).most_common(1)[0][1] == 1, "an e-mail went twice"
    recorded = [ref for channel, _, ref in rows if channel == "sms"]
    assert sorted(sids) == sorted(recorded), _sms_story(run, set(sids) - set(recorded))
    assert sorted(message_ids) == sorted(ref for channel, _, ref in rows if channel == "email")


def _sms_story(run: Run, extra: set[str]) -> str:
    """What the fake Twilio saw of the numbers that got an SMS the ledger does not hold, on a
    clock that starts at the first signal sent: to tell who sent it, and when."""
    zero = run.signals[0][2] if run.signals else 0.0
    numbers = {m["to"] for m in run.twilio.messages if m["sid"] in extra}
    lines = [f"{what} pid {pid} at {at - zero:+.3f} s" for what, pid, at in run.signals]
    lines += [
        f"{r.at - zero:+.3f} s {r.method} to {r.to}: {r.answer}"
        for r in run.twilio.requests
        if r.to in numbers
    ]
    lines += [
        f"not in the ledger: {m['sid']} to {m['to']}"
        for m in run.twilio.messages
        if m["sid"] in extra
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class JobRun:
    job: str
    holder: str
    started: datetime
    ended: datetime
    enqueued: int  # alerts a sweep enqueued


def _job_runs(logs: Path, pattern: str) -> list[JobRun]:
    runs = []
    for path in sorted(logs.glob(pattern)):
        for line in path.read_text().splitlines():
            if line.startswith("{") and '"msg": "job done"' in line:
                entry = json.loads(line)
                runs.append(
                    JobRun(
                        entry["job"],
                        entry["holder"],
                        datetime.fromisoformat(entry["started"]),
                        datetime.fromisoformat(entry["ended"]),
                        entry.get("enqueued", 0),
                    )
                )
    return runs


def _check_one_holder_at_a_time(runs: list[JobRun]) -> None:
    for job in {run.job for run in runs}:
        of_job = sorted((run for run in runs if run.job == job), key=lambda run: run.started)
        for before, after in itertools.pairwise(of_job):
            assert after.started >= before.ended, f"{job}: {before} overlaps {after}"


@contextmanager
def _running(url: str, logs: Path, *, scaled: bool) -> Iterator[Run]:
    """Fresh fakes and the processes of one shape, every API answering /readyz."""
    twilio, smtp = FakeTwilio().start(), SmtpSink().start()
    engine = make_engine(url)
    env = _env(url, twilio, smtp)
    api = [{**env, "ANJEON_PORT": str(free_port())}]
    commands = [("serve", api[0])]
    if scaled:
        api[0]["ANJEON_SCHEDULER_ENABLED"] = "false"
        api.append({**api[0], "ANJEON_PORT": str(free_port())})
        commands = [("serve", api[0]), ("serve", api[1])]
        commands += [("dispatch", env)] * 2 + [("schedule", env)] * 2
    bases = [f"http://127.0.0.1:{each['ANJEON_PORT']}" for each in api]
    run = Run(make_session_factory(engine), bases, twilio, smtp, logs, env=env)
    try:
        with processes(*commands, logs=logs) as started:
            run.dispatchers, run.schedulers = started[2:4], started[4:6]
            for base, process in zip(bases, started, strict=False):
                wait_ready(base, process, logs, limit_s=START_S)
            yield run
            assert all(p.poll() is None for p in started), log_tail(logs)
        # SIGTERM: `anjeon schedule` lets a running job finish, then exits cleanly.
        assert [p.returncode for p in run.schedulers] == [0] * len(run.schedulers)
    finally:
        engine.dispose()
        twilio.stop()
        smtp.stop()


def _dispatchers_started(run: Run) -> bool | None:
    with run.session() as session:
        return session.scalar(select(func.count(DispatcherWorker.name))) == 2 or None


def _play(url: str, logs: Path, *, scaled: bool) -> Counter:
    """The scenario in one shape; the sends it made, checked against the ledger."""
    logs.mkdir()
    began = time.monotonic()
    with _running(url, logs, scaled=scaled) as run:
        if scaled:
            _found(lambda: _dispatchers_started(run), "the dispatchers did not start", logs)
        ready = time.monotonic()
        consuls = [consul_key(url, "first"), consul_key(url, "second")]
        _check_ledger(run, _scenario(run, consuls, faults=scaled))
        played = time.monotonic()
    print(
        f"{'SCALED' if scaled else 'SINGLE'} start-up {ready - began:.1f} s, "
        f"scenario {played - ready:.1f} s, stop {time.monotonic() - played:.1f} s"
    )
    return _sends(run)


@postgresql_only
def test_on_postgresql_two_of_each_process_send_what_one_process_sends_once_each(tmp_path):
    assert PG_URL
    expected = Counter(
        {
            (n, label, channel): 1
            for n in range(CITIZENS)
            for label in ("ALPHA", "BRAVO")
            for channel in ("sms", "email")
        }
    )
    with scratch_database(PG_URL, tmp_path, "scaled") as url:
        scaled = _play(url, tmp_path / "scaled", scaled=True)
    assert scaled == expected
    with scratch_database(PG_URL, tmp_path, "single") as url:
        single = _play(url, tmp_path / "single", scaled=False)
    assert single == scaled

    runs = _job_runs(tmp_path / "scaled", "schedule-*.log")
    _check_one_holder_at_a_time(runs)
    assert {run.job for run in runs} >= {
        "geomatch-sweep",
        "expire-advisories",
        "checkin-escalate",
        "forget-inbound-sms",
        "purge-ended-stays",
        "forget-ended-ledgers",
        "purge-unverified",
    }
    sweeps = [run for run in runs if run.job == "geomatch-sweep"]
    sweepers = Counter(run.holder for run in sweeps)
    print(f"SCALED job runs: {len(runs)}; sweeps by holder: {dict(sweepers)}")
    assert len(sweepers) == 2, "the sweep was not taken over"
    assert sum(run.enqueued for run in sweeps) == 2 * CITIZENS  # BRAVO's, by the sweep
    assert not _job_runs(tmp_path / "scaled", "serve-*.log")  # the API ran no job


@postgresql_only
def test_on_postgresql_a_sweep_whose_lease_went_to_another_holder_commits_nothing(tmp_path):
    assert PG_URL
    with scratch_database(PG_URL, tmp_path, "sweepfence") as url:
        engine = make_engine(url)
        factory = make_session_factory(engine)
        ttl = timedelta(seconds=3)
        with factory.begin() as session:
            assert lease.acquire(session, name="geomatch-sweep", now=utcnow(), ttl=ttl)
        fenced: sessionmaker[Session] = fenced_by_lease(factory, name="geomatch-sweep", ttl=ttl)
        with fenced.begin() as session:  # still ours: commits
            session.add(lease.SchedulerLease(name="run-1", holder="x", expires_at=utcnow()))
            timeout = session.scalar(
                select(func.current_setting("idle_in_transaction_session_timeout"))
            )
        assert timeout == "3s"
        with pytest.raises(LeaseLost), fenced.begin() as session:
            session.add(lease.SchedulerLease(name="run-2", holder="x", expires_at=utcnow()))
            session.flush()
            with factory.begin() as other:  # a successor took the lapsed lease meanwhile
                other.execute(
                    update(lease.SchedulerLease)
                    .where(lease.SchedulerLease.name == "geomatch-sweep")
                    .values(holder="successor")
                )
        with factory() as session:
            names = set(session.scalars(select(lease.SchedulerLease.name)))
        engine.dispose()
        assert names == {"geomatch-sweep", "run-1"}


def test_compose_runs_the_scheduler_alone_in_the_scaled_profile():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    scheduler = services["scheduler"]
    assert scheduler["command"] == ["anjeon", "schedule"]
    build_parser().parse_args(scheduler["command"][1:])
    assert scheduler["profiles"] == ["scaled"]
    assert scheduler["depends_on"]["api"]["condition"] == "service_healthy"
    # The worker's environment, which tests/test_docs.py holds to the production checks.
    assert scheduler["environment"] == services["worker"]["environment"]
    assert {"ANJEON_SCHEDULER_ENABLED", "ANJEON_RATE_LIMIT_STORAGE"} <= set(
        scheduler["environment"]
    )


@postgresql_only
def test_on_postgresql_a_dispatcher_paused_right_after_its_claim_sends_nothing_twice(
    tmp_path, twilio, smtp
):
    """The pause the scaled test's SIGSTOP sometimes lands in, made certain: right after the
    claim commits, longer than the lease, while a stand-in takes the rows over and sends."""
    with scratch_database(PG_URL or "", tmp_path, "pausedclaim") as url:
        seed_pending(url, citizens=2, secret=TEST_SECRET.encode())
        settings = make_settings(url, **notifier_settings(twilio, smtp), dispatch_lease_s=1.0)
        engines = [make_engine(url), make_engine(url)]
        paused_one, stand_in = (
            Dispatcher.from_settings(
                settings,
                make_session_factory(engine),
                vault=PersonalDataVault(settings.secret_key_bytes()),
                lanes=False,
            )
            for engine in engines
        )
        armed = [True]

        def pause_after_the_claim(session: Session) -> None:
            if armed:  # the first commit: the claim's
                armed.clear()
                time.sleep(1.5)  # past the 1 s lease
                stand_in.step(channels=["sms"])

        event.listen(paused_one.factory, "after_commit", pause_after_the_claim)
        # Its own handler: the migration's logging config (alembic.ini) replaced caplog's.
        said: list[logging.LogRecord] = []
        heard = logging.Handler(logging.WARNING)
        heard.emit = said.append  # type: ignore[method-assign]
        logging.getLogger("anjeon.dispatch").addHandler(heard)
        try:
            paused_one.step(channels=["sms"])
        finally:
            logging.getLogger("anjeon.dispatch").removeHandler(heard)
        with paused_one.factory() as session:
            paused_ids = session.scalars(select(Alert.id).where(Alert.channel == "sms")).all()
        for engine in engines:
            engine.dispose()
    assert Counter(m["to"] for m in twilio.messages) == {phone_of(0): 1, phone_of(1): 1}
    # The paused one's silent skips are said: a starved dispatcher is what its log shows.
    skipped = [r for r in said if r.getMessage().startswith("send skipped")]
    assert sorted(r.alert_id for r in skipped) == sorted(paused_ids)
