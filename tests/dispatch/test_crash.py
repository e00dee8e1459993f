"""Crash safety with the dispatcher as a real process: kill -9 it mid-run and restart it;
every SMS reaches the fake Twilio exactly once (the unknown ones are looked up, not resent),
every e-mail at least once and at most once more per kill; nothing is lost. And two
dispatchers on PostgreSQL send the same set as one."""

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from service.db import READ_ONLY, make_engine, make_session_factory
from service.ledger.models import Alert
from tests.conftest import PG_URL, TEST_SECRET
from tests.dispatch.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, Answer
from tests.dispatch.processes import start
from tests.dispatch.seed import email_of, phone_of, scratch_database, seed_pending

CITIZENS = 1000  # 2,000 alerts


def dispatcher_env(url: str, twilio, smtp) -> dict[str, str]:
    return {
        **os.environ,
        "ANJEON_DATABASE_URL": url,
        "ANJEON_SECRET_KEY": TEST_SECRET,
        "ANJEON_SMS_NOTIFIER": "twilio",
        "ANJEON_EMAIL_NOTIFIER": "smtp",
        "ANJEON_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "ANJEON_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "ANJEON_TWILIO_FROM": "+15005550006",
        "ANJEON_TWILIO_API_BASE": twilio.url,
        "ANJEON_TWILIO_MPS": "0",
        # The fake makes a message as its request comes: a send in flight at a kill settles
        # at once, and waiting twice the timeout for each (20 s) only made the suite slower.
        "ANJEON_TWILIO_SETTLE_S": "2",
        "ANJEON_SMTP_HOST": "127.0.0.1",
        "ANJEON_SMTP_PORT": str(smtp.port),
        "ANJEON_SMTP_FROM": "alerts@anjeon.test",
        "ANJEON_DISPATCH_LEASE_S": "2",
        "ANJEON_DISPATCH_BATCH": "50",
        "ANJEON_DISPATCH_THREADS": "4",
        "ANJEON_DISPATCH_INTERVAL_S": "0.2",
        "ANJEON_LOG_LEVEL": "WARNING",
    }


def wait_for(condition, *, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def finish(process: subprocess.Popen, *, timeout_s: float) -> tuple[str, str]:
    """communicate(), or on timeout the stuck process's threads (SIGUSR1, service/cli.py) and
    the end of its stderr in the failure."""
    try:
        return process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"no exit within {timeout_s} s; stderr:\n{err[-6000:]}") from None


def watch_until_exit(process, twilio) -> tuple[float, str]:
    """Wait for the process to end; return when the fake Twilio last took a message (on the
    monotonic clock) and the process's stderr."""
    count, last = len(twilio.messages), time.monotonic()
    while process.poll() is None:
        if len(twilio.messages) != count:
            count, last = len(twilio.messages), time.monotonic()
        time.sleep(0.005)
    if len(twilio.messages) != count:
        last = time.monotonic()
    return last, process.stderr.read()


def ledger(url: str) -> Counter:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        session.connection(execution_options={READ_ONLY: True})  # a read: no write lock
        rows = session.execute(select(Alert.status, func.count()).group_by(Alert.status)).all()
    engine.dispose()
    return Counter(dict(rows))


def test_kill_9_mid_run_loses_nothing_and_sends_no_sms_twice(database_url, tmp_path, twilio, smtp):
    with scratch_database(database_url, tmp_path, "crash") as url:
        seed_pending(url, citizens=CITIZENS, secret=TEST_SECRET.encode())
        env = dispatcher_env(url, twilio, smtp)
        kills = 0
        # Kill while SMS are in flight, mid-batch (batches are 50): Twilio has accepted some
        # that the ledger never saw.
        for threshold in (130, 420, 777):
            process = start(env)
            wait_for(lambda t=threshold: len(twilio.messages) >= t)
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        restarted_at = time.monotonic()
        last = start(env)
        last_send, err = watch_until_exit(last, twilio)
        out = last.stdout.read()
        assert last.returncode == 0, err
        print(
            f"CRASH after the third kill -9: last SMS {last_send - restarted_at:.2f} s "
            "after restart"
        )

        sms = Counter(m["to"] for m in twilio.messages)
        assert sms == Counter({phone_of(n): 1 for n in range(CITIZENS)})
        mail = Counter(m["To"] for m in smtp.received)
        assert set(mail) == {email_of(n) for n in range(CITIZENS)}
        assert max(mail.values()) <= 1 + kills
        assert ledger(url) == Counter({"sent": 2 * CITIZENS})
        # The restarted dispatchers looked up what the killed ones may have sent.
        assert len(twilio.lists) >= 1
        assert out.startswith("claimed ")


def test_sms_in_flight_when_the_dispatcher_died_are_looked_up_once_the_provider_made_them(
    database_url, tmp_path, twilio, smtp
):
    """A probe: a dispatcher killed while its sends were in flight, to a Twilio that makes each
    message 5 s after the request. The restarted one took the rows back at once and looked
    them up before Twilio had made them: 8 of 200 citizens got two SMS."""
    citizens, in_flight = 40, 4
    with scratch_database(database_url, tmp_path, "in-flight") as url:
        seed_pending(url, citizens=citizens, secret=TEST_SECRET.encode())
        env = {
            **dispatcher_env(url, twilio, smtp),
            "ANJEON_DISPATCH_LEASE_S": "10",
            "ANJEON_TWILIO_TIMEOUT_S": "3",
            "ANJEON_TWILIO_SETTLE_S": "0",  # twice the timeout: 6 s
        }
        twilio.script(None, *[Answer(creates_after_s=5) for _ in range(in_flight)])
        victim = start(env)
        wait_for(lambda: len(twilio.posts) >= in_flight)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert len(twilio.messages) < in_flight, "the provider made them before the kill"
        survivor = start(env)
        _, err = watch_until_exit(survivor, twilio)
        assert survivor.returncode == 0, err
        assert "took back the alerts of a dispatcher that ended" in err
        sms = Counter(m["to"] for m in twilio.messages)
        assert sms == Counter({phone_of(n): 1 for n in range(citizens)})
        assert ledger(url) == Counter({"sent": 2 * citizens})


@pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set")
def test_two_dispatchers_on_postgresql_send_the_same_set_as_one(tmp_path, twilio, smtp):
    assert PG_URL
    with scratch_database(PG_URL, tmp_path, "pair") as url:
        seed_pending(url, citizens=CITIZENS, secret=TEST_SECRET.encode())
        env = dispatcher_env(url, twilio, smtp)
        first, second = start(env), start(env)
        outputs = [p.communicate(timeout=180) for p in (first, second)]
        assert first.returncode == 0 and second.returncode == 0, outputs
        assert Counter(m["to"] for m in twilio.messages) == Counter(
            {phone_of(n): 1 for n in range(CITIZENS)}
        )
        assert Counter(m["To"] for m in smtp.received) == Counter(
            {email_of(n): 1 for n in range(CITIZENS)}
        )
        assert ledger(url) == Counter({"sent": 2 * CITIZENS})
        engine = make_engine(url)
        with engine.connect() as conn:
            workers = conn.execute(select(func.count(func.distinct(Alert.claimed_by)))).scalar()
        engine.dispose()
        assert workers == 2  # both took a share
