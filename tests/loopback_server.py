"""The tests' own HTTP servers on loopback (fake Twilio, feeds, webhooks), and the app under
uvicorn, each served from a thread."""

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def uvicorn_in_thread(app: FastAPI, port: int) -> Iterator[None]:
    """The app under uvicorn on 127.0.0.1:`port`, started, until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
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
