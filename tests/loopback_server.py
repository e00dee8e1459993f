"""The tests' own HTTP servers on loopback (fake Twilio, feeds, webhooks), and the app under
uvicorn, each served from a thread."""

import http.server
import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

# How often serve_forever looks for shutdown(): its default, 0.5 s, made every test with a
# server wait 0.25 s on average at teardown (a minute or so of each leg of the suite).
POLL_S = 0.02


def serve_in_thread(server: socketserver.BaseServer) -> None:
    """Serve until server.shutdown(), which then returns within POLL_S."""
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_S}, daemon=True
    ).start()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing, with one call to answer."""

    def reply(
        self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading server for `handler` on 127.0.0.1: its base URL, until the block ends."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_PORT_PICKER = random.SystemRandom()  # not `random`: pytest-randomly seeds it alike in every leg


def _bound_below_the_ephemeral_range(held: socket.socket) -> int:
    """Bind `held` to 127.0.0.1 on a free port below the ephemeral range, picked at random
    (legs rarely pick the same one); bind(0)'s where too few ports lie below it."""
    low = _ephemeral_low()
    if low - 1024 < 2000:
        held.bind(("127.0.0.1", 0))
        return held.getsockname()[1]
    for _ in range(200):
        port = _PORT_PICKER.randrange(max(1024, low - 12000), low)
        try:
            held.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port below the ephemeral range")


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server started a moment later (another process).
    Not bind(0)'s: that port comes from the ephemeral range, where any outgoing connection of
    the four legs (PostgreSQL, Redis, HTTP) may take it first ("address already in use", once
    in 4 CI runs)."""
    with socket.socket() as probe:
        return _bound_below_the_ephemeral_range(probe)


def listening_socket() -> socket.socket:
    """A socket bound to a free port of 127.0.0.1 and held, for a server in this process."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bound_below_the_ephemeral_range(held)
    return held


@contextmanager
def uvicorn_in_thread(app: FastAPI, held: socket.socket) -> Iterator[None]:
    """The app under uvicorn on the `held` socket (listening_socket()), started, until the
    block ends; the socket is closed with it."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [held]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        held.close()
