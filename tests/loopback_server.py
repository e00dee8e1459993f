"""The tests' own HTTP servers on loopback (fake Twilio, feeds, webhooks), served from a thread."""

import socketserver
import threading

# How often serve_forever looks for shutdown(): its default, 0.5 s, made every test with a
# server wait 0.25 s on average at teardown (a minute or so of each leg of the suite).
POLL_S = 0.02


def serve_in_thread(server: socketserver.BaseServer) -> None:
    """Serve until server.shutdown(), which then returns within POLL_S."""
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_S}, daemon=True
    ).start()
