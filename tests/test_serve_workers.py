"""`anjeon serve --workers 2`: two worker processes start on one port and both answer. Which
process answered a connection is read from /proc: the server side of each loopback connection
is a socket whose inode one worker holds among its file descriptors. SIGTERM to the parent
stops the workers too. `anjeon serve` counts a client by its socket's peer: X-Forwarded-For
from a loopback client that is not a trusted proxy changes nothing. Several workers counting
in memory:// (each its own count) is refused in production. SQLite, a scratch database;
Linux only (/proc)."""

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.cli import main
from service.config import get_settings
from service.migrate import upgrade
from tests.builders import citizen_body
from tests.loopback_server import free_port

ROOT = Path(__file__).resolve().parent.parent
START_S = 60  # two processes import the service and load the country boundaries at once

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _workers(parent: int) -> list[int]:
    """The parent's children that serve (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _server_socket_inode(port: int, client_port: int) -> int | None:
    """The inode of the server's end of the connection from client_port to port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
            return inode
    return None


def _holder(inode: int, pids: list[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def _who_answers(port: int, workers: list[int]) -> int | None:
    """GET /healthz on a new connection; the worker process holding its server end."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            return None
        client_port = connection.sock.getsockname()[1]
        inode = _server_socket_inode(port, client_port)
        return _holder(inode, workers) if inode else None
    except OSError:
        return None  # not accepted yet: both workers are still starting
    finally:
        connection.close()


def _serve(tmp_path: Path, port: int, workers: int, **env: str) -> tuple[subprocess.Popen, Path]:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    upgrade(url)
    environment = {
        **os.environ,
        "ANJEON_DATABASE_URL": url,
        "ANJEON_SECRET_KEY": secrets.token_urlsafe(40),
        "ANJEON_HOST": "127.0.0.1",
        "ANJEON_PORT": str(port),
        "ANJEON_LOG_LEVEL": "WARNING",
        **env,
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--workers", str(workers)],
            env=environment,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return serve, log


def _stop(serve: subprocess.Popen) -> None:
    serve.send_signal(signal.SIGTERM)
    try:
        serve.wait(timeout=20)
    except subprocess.TimeoutExpired:
        serve.kill()
        serve.wait(timeout=10)


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _register(port: int, forwarded_for: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(
            "POST",
            "/v1/citizens",
            body=json.dumps(citizen_body()),
            headers={"Content-Type": "application/json", "X-Forwarded-For": forwarded_for},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_forwarded_for_header_from_an_untrusted_peer_is_not_the_client(tmp_path):
    """uvicorn by itself believes X-Forwarded-For from 127.0.0.1: each registration naming
    another address would then be a new client, and the per-client limit would never hold."""
    port = free_port()
    serve, log = _serve(tmp_path, port, 1, ANJEON_RATE_LIMIT_CLIENT="2/hour")
    try:
        deadline = time.monotonic() + START_S
        while not _healthy(port) and serve.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        answers = [_register(port, f"203.0.113.{n}") for n in range(3)]
    finally:
        _stop(serve)
    assert answers == [201, 201, 429], log.read_text()[-3000:]


def _must_not_serve(*_: object, **__: object) -> None:
    raise AssertionError("served although refused")


def test_several_workers_counting_in_memory_are_refused_in_production(monkeypatch, capsys):
    for name, value in {
        "ANJEON_ENVIRONMENT": "production",
        "ANJEON_SECRET_KEY": secrets.token_urlsafe(40),
        "ANJEON_ALLOW_CONSOLE_NOTIFIER": "true",
        "ANJEON_PUBLIC_BASE_URL": "https://anjeon.example",
        "ANJEON_DUTY_EMAIL": '["duty@example.org"]',
        "ANJEON_RATE_LIMIT_STORAGE": "memory://",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.setattr("service.cli.uvicorn.run", _must_not_serve)
    try:
        assert main(["serve", "--workers", "2"]) == 2
    finally:
        get_settings.cache_clear()  # not these settings for the tests after this one
    assert "ANJEON_RATE_LIMIT_STORAGE" in capsys.readouterr().err


def test_serve_with_two_workers_answers_from_both(tmp_path):
    port = free_port()
    serve, log = _serve(tmp_path, port, 2)
    workers: list[int] = []
    answered: set[int] = set()
    try:
        deadline = time.monotonic() + START_S
        with ThreadPoolExecutor(8) as pool:
            while answered != set(workers) or len(workers) < 2:
                assert serve.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, (
                    f"workers {workers}, answered from {answered}:\n{log.read_text()[-3000:]}"
                )
                workers = _workers(serve.pid)
                assert len(workers) <= 2, f"more than two workers: {workers}"
                found = pool.map(_who_answers, [port] * 8, [workers] * 8)
                answered |= {pid for pid in found if pid is not None}
                time.sleep(0.1)
        assert len(answered) == 2
    finally:
        _stop(serve)
    assert serve.returncode == 0, log.read_text()[-3000:]
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived serve"


def test_the_served_app_answers_head_and_redirects_on_its_own_host(tmp_path):
    """Through uvicorn: HEAD has GET's headers and no body, and a trailing-slash redirect does
    not carry the Host header a client sent."""
    port = free_port()
    serve, log = _serve(tmp_path, port, 1)
    try:
        deadline = time.monotonic() + START_S
        while not _healthy(port) and serve.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("HEAD", "/register")
        head = connection.getresponse()
        head_body = head.read()
        connection.request("GET", "/register/", headers={"Host": "evil.example"})
        redirect = connection.getresponse()
        redirect.read()
        connection.close()
    finally:
        _stop(serve)
    assert head.status == 200 and head_body == b""
    assert int(head.getheader("content-length")) > 1000  # the page's own length
    assert (redirect.status, redirect.getheader("location")) == (307, "/register")
