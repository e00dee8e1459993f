"""Two real `anjeon serve` processes on two loopback ports, one database, one Redis: the
registration limit per client address holds across them. Registrations sent to each in turn
get exactly the limit's 201s between them, then 429s from both; with memory:// storage each
process counts alone and lets through twice as many (why several processes need Redis).

Redis comes from ANJEON_TEST_REDIS_URL (.ci/run starts one and sets it); without it this
test skips locally and fails in CI. Each run has its own secret key, so its keys in Redis
(HMAC-hashed under a key derived from the secret) are its own; they are deleted afterwards."""

import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select

from service.citizens.models import Citizen
from service.config import Settings
from service.db import make_engine
from service.rate_limits import RateLimits, Rule, address_key
from tests.builders import citizen_body
from tests.conftest import redis_url_for_tests
from tests.dispatch.seed import scratch_database
from tests.loopback_server import free_port

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 6
REQUESTS = 14
START_S = 90  # loading the country boundaries takes a few seconds per process


@contextmanager
def serving(url: str, storage: str, secret: str, logs: Path) -> Iterator[list[str]]:
    """Two `anjeon serve` processes; yields their base URLs once both answer /readyz."""
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        "ANJEON_DATABASE_URL": url,
        "ANJEON_SECRET_KEY": secret,
        "ANJEON_HOST": "127.0.0.1",
        "ANJEON_RATE_LIMIT_STORAGE": storage,
        "ANJEON_RATE_LIMIT_CLIENT": f"{LIMIT}/hour",
        "ANJEON_VERIFICATION": "off",  # no codes to send: only the client limit is at stake
        "ANJEON_SCHEDULER_ENABLED": "false",
        "ANJEON_LOG_LEVEL": "WARNING",
    }
    processes: list[subprocess.Popen] = []
    try:
        for port in ports:
            with (logs / f"serve-{port}.log").open("w") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "service.cli", "serve"],
                        env={**env, "ANJEON_PORT": str(port)},
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        deadline = time.monotonic() + START_S
        for process, base in zip(processes, bases, strict=True):
            while not _ready(base):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{base} did not start:\n{_logs(logs)}")
                time.sleep(0.2)
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _logs(logs: Path) -> str:
    return "\n".join(path.read_text()[-3000:] for path in sorted(logs.glob("serve-*.log")))


def _register_in_turn(bases: list[str]) -> list[httpx.Response]:
    answers = []
    with httpx.Client(timeout=20) as client:
        for i in range(REQUESTS):
            answers.append(client.post(f"{bases[i % 2]}/v1/citizens", json=citizen_body()))
    return answers


def _forget(storage: str, secret: str) -> None:
    """Delete this run's keys from Redis: those of the client rule for the loopback address."""
    limits = RateLimits(Settings(secret_key=secret, rate_limit_storage=storage))
    hashed = limits._hashed(Rule.CLIENT, address_key("127.0.0.1"))
    client = redis.Redis.from_url(storage)
    keys = list(client.scan_iter(match=f"anjeon:*/{hashed}/*"))
    if keys:
        client.delete(*keys)
    client.close()


def _citizens(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).select_from(Citizen))
    engine.dispose()
    return count


def test_two_serve_processes_share_one_limit_through_redis(database_url, tmp_path):
    storage = redis_url_for_tests("the two-process test")
    secret = secrets.token_urlsafe(40)  # this run's keys in Redis are its own
    with scratch_database(database_url, tmp_path, "twoprocs") as url:
        try:
            with serving(url, storage, secret, tmp_path) as bases:
                answers = _register_in_turn(bases)
        finally:
            _forget(storage, secret)
        statuses = [answer.status_code for answer in answers]
        assert Counter(statuses) == {201: LIMIT, 429: REQUESTS - LIMIT}, _logs(tmp_path)
        # In turn: the first LIMIT were taken, half by each process; then each refused, though
        # it had let through only LIMIT / 2 itself.
        assert statuses == [201] * LIMIT + [429] * (REQUESTS - LIMIT)
        for refused in answers[LIMIT:]:
            assert refused.headers["content-type"] == "application/problem+json"
            assert 0 < int(refused.headers["retry-after"]) <= 3600
            assert refused.json()["status"] == 429
        assert _citizens(url) == LIMIT  # both wrote to the one database


def test_with_memory_storage_each_process_counts_alone(database_url, tmp_path):
    with scratch_database(database_url, tmp_path, "twoprocs") as url:
        with serving(url, "memory://", secrets.token_urlsafe(40), tmp_path) as bases:
            answers = _register_in_turn(bases)
        statuses = [answer.status_code for answer in answers]
        assert Counter(statuses) == {201: 2 * LIMIT, 429: REQUESTS - 2 * LIMIT}, _logs(tmp_path)
        assert _citizens(url) == 2 * LIMIT
