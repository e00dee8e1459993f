"""POST /v1/feeds/{name}/poll through the real request path (the app's own session factory on
a file database): the fetch runs outside any transaction, so other requests write meanwhile."""

import http.server
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from service.advisories.feeds.config import Feed
from service.advisories.models import Advisory
from service.app import create_app
from service.staff import service as staff_service
from tests.advisories.feed_samples import current_cap
from tests.builders import register
from tests.conftest import make_settings
from tests.dispatch.seed import scratch_database
from tests.loopback_server import serve_in_thread

WAIT_S = 30  # generous: only a broken service waits this long


class HeldFeed(http.server.BaseHTTPRequestHandler):
    """Serves one current CAP alert, but only once the test lets it go."""

    asked = threading.Event()
    release = threading.Event()

    def do_GET(self):
        type(self).asked.set()
        type(self).release.wait(WAIT_S)
        body = current_cap()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def held_feed():
    HeldFeed.asked, HeldFeed.release = threading.Event(), threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HeldFeed)
    server.daemon_threads = True
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}/cap"
    HeldFeed.release.set()
    server.shutdown()


def open_transactions(app) -> int:
    """Other sessions of this database idle inside a transaction (PostgreSQL only)."""
    with app.state.engine.connect() as conn:
        return conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )


def test_poll_writes_nothing_while_fetching_and_blocks_no_other_write(
    database_url, tmp_path, held_feed
):
    with scratch_database(database_url, tmp_path, "poll_api") as url:
        app = create_app(make_settings(url))
        app.state.feeds = [
            Feed.model_validate(
                {"name": "held", "url": held_feed, "format": "cap", "allow_private": True}
            )
        ]
        with app.state.session_factory.begin() as session:
            admin = staff_service.create_key(session, name="feed-admin", role="admin").key
        with TestClient(app, raise_server_exceptions=False) as client:
            answers = []
            poll = threading.Thread(
                target=lambda: answers.append(
                    client.post("/v1/feeds/held/poll", headers={"Authorization": f"Bearer {admin}"})
                )
            )
            poll.start()
            try:
                # The fetch starts (no lock to wait for) and hangs until released.
                reached = HeldFeed.asked.wait(WAIT_S)
                if app.state.engine.dialect.name == "postgresql":
                    assert open_transactions(app) == 0
                register(client)  # a write while the fetch is in flight: 201, not 503
                assert reached and poll.is_alive() and not answers
            finally:
                HeldFeed.release.set()  # a failing test must not leave the request hanging
                poll.join(WAIT_S)
        [answer] = answers
        assert answer.status_code == 200, answer.text
        assert answer.json()["last_outcome"] == "updated"
        with app.state.session_factory() as session:
            stored = select(func.count()).select_from(Advisory).where(Advisory.source == "cap")
            assert session.scalar(stored) == 1
