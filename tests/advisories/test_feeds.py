"""Polling feeds from a loopback HTTP server: conditional GET, 304, timeout, size cap, and the
guard against non-public addresses; feeds.toml validation; the scheduler's feed jobs."""

import gzip
import http.server
import json
import time
import zlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from service.advisories.feeds.config import Feed, FeedConfigError, load_feeds
from service.advisories.feeds.fetch import FetchError, check_destination
from service.advisories.ingest import import_document
from service.advisories.models import Advisory, FeedState
from service.config import PROJECT_ROOT
from service.operations.figures import read_queue
from service.scheduler import build_scheduler
from tests.advisories.feed_samples import FEEDS, current_cap
from tests.loopback_server import serve_in_thread

ZEROS_GZIPPED = gzip.compress(bytes(10 * 1024 * 1024), compresslevel=9)


class FeedServer(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str]]] = []  # noqa: RUF012 - one list for every handler
    dripped = 0  # bytes /drip has sent

    def do_GET(self):
        type(self).requests.append((self.path, dict(self.headers)))
        if self.path == "/cap":
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.end_headers()
                return
            body = current_cap()
            self.send_response(200)
            self.send_header("ETag", '"v1"')
            self.send_header("Last-Modified", "Fri, 27 Nov 2026 10:00:00 GMT")
        elif self.path == "/slow":
            time.sleep(10)  # far past the poll's 3 s timeout, however busy the machine
            body = b"late"
            self.send_response(200)
        elif self.path == "/huge":
            body = b"<rss>" + b" " * (6 * 1024 * 1024)
            self.send_response(200)
        elif self.path == "/huge-chunked":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the cap must count what arrives
            for _ in range(100):
                self.wfile.write(b" " * 65536)
            return
        elif self.path == "/gzip":  # a feed gzipped, as servers answer Accept-Encoding: gzip
            body = gzip.compress(current_cap())
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
        elif self.path == "/deflate":  # what some servers send whatever was asked
            body = zlib.compress(current_cap())
            self.send_response(200)
            self.send_header("Content-Encoding", "deflate")
        elif self.path == "/odd-encoding":  # a misconfigured server: a charset as an encoding
            body = current_cap()
            self.send_response(200)
            self.send_header("Content-Encoding", "UTF-8")
        elif self.path == "/gzip-bomb":  # 10 MiB of nothing in about 10 KB
            body = ZEROS_GZIPPED
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
        elif self.path == "/gzip-twice":  # httpx honoured it: a probe's 825 bytes made 400 MB
            body = gzip.compress(gzip.compress(current_cap()))
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip, gzip")
        elif self.path == "/drip":  # a byte every 0.2 s, each gap inside the 3 s timeout
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"1\r\n \r\n")
                    self.wfile.flush()
                    type(self).dripped += 1
                    time.sleep(0.2)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the poller hung up, as it should
            return
        elif self.path == "/broken":
            body = b"<alert><unclosed>"
            self.send_response(200)
        elif self.path == "/error":
            body = b"upstream down"
            self.send_response(503)
        else:
            body = b""
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def feed_server():
    FeedServer.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FeedServer)
    server.daemon_threads = True
    server.handle_error = lambda *args: None  # a client that timed out is expected here
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _feed(url, **overrides):
    values = {"name": "loopback", "url": url, "format": "cap", "allow_private": True}
    values.update(overrides)
    return Feed.model_validate(values)


def test_poll_then_304(poll, db, feed_server):
    feed = _feed(f"{feed_server}/cap")
    assert poll(feed) == "updated"
    assert (
        db.scalar(select(func.count()).select_from(Advisory).where(Advisory.source == "cap")) == 1
    )
    first = db.get(FeedState, "loopback").last_polled_at
    said = db.get(FeedState, "loopback").last_detail
    assert said.startswith("created 1")
    assert poll(feed) == "not-modified"
    assert FeedServer.requests[1][1].get("If-None-Match") == '"v1"'
    assert FeedServer.requests[1][1].get("If-Modified-Since") == "Fri, 27 Nov 2026 10:00:00 GMT"
    state = db.get(FeedState, "loopback")
    assert state.last_outcome == "not-modified" and state.etag == '"v1"'
    assert state.last_detail == said  # the same document: what was said of it stands
    # The first poll is kept (AnjeonFeedFailing counts from it until one succeeds).
    assert state.first_polled_at == first < state.last_polled_at
    assert (
        db.scalar(select(func.count()).select_from(Advisory).where(Advisory.source == "cap")) == 1
    )


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/slow", "timed out"),
        ("/huge", "cap"),
        ("/huge-chunked", "cap"),
        ("/gzip-bomb", "cap"),
        ("/gzip-twice", "one compression at most"),
        ("/drip", "longer than 3.0 s in all"),
        ("/error", "HTTP 503"),
        ("/broken", "not well-formed"),
    ],
)
def test_failed_polls_are_recorded_and_change_nothing(poll, db, feed_server, path, why):
    before = db.scalar(select(func.count()).select_from(Advisory))
    assert poll(_feed(feed_server + path)) == "error"
    state = db.get(FeedState, "loopback")
    assert state.last_outcome == "error" and why in state.last_detail
    assert db.scalar(select(func.count()).select_from(Advisory)) == before


@pytest.mark.parametrize("path", ["/gzip", "/deflate", "/odd-encoding"])
def test_a_compressed_feed_is_read(poll, db, feed_server, path):
    """As httpx read them before the poller inflated responses itself (a review)."""
    assert poll(_feed(f"{feed_server}{path}")) == "updated"
    assert db.scalar(select(func.count()).select_from(Advisory)) == 1


def test_a_feed_that_trickles_is_cut_at_its_timeout_in_all(poll, db, feed_server):
    """Found by a probe: the timeout held for each read, and a server sending a byte every
    0.2 s held a 0.5 s poll for 8 s (as long as it chose)."""
    FeedServer.dripped = 0
    assert poll(_feed(f"{feed_server}/drip")) == "error"
    assert 0 < FeedServer.dripped < 40  # the poll gave up while its server went on


def test_loopback_url_without_the_flag_is_never_requested(poll, db, feed_server):
    assert poll(_feed(f"{feed_server}/cap", allow_private=False)) == "error"
    assert FeedServer.requests == []
    assert "non-public address" in db.get(FeedState, "loopback").last_detail


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/x",
        "http://[::1]/x",
        "http://192.168.0.1/x",
    ],
)
def test_non_public_destinations_are_refused(url):
    with pytest.raises(FetchError, match="non-public"):
        check_destination(url, allow_private=False)


def test_feed_config_is_validated(tmp_path):
    good = tmp_path / "feeds.toml"
    good.write_text(
        '[[feed]]\nname = "usgs"\nurl = "https://example.org/f.geojson"\nformat = "geojson"\n'
        '[feed.levels]\nred = "3"\n'
    )
    (feed,) = load_feeds(good)
    assert feed.levels == {"red": "3"} and feed.interval_s == 300
    for text, problem in [
        ('[[feed]]\nname = "x"\nurl = "file:///etc/passwd"\nformat = "cap"\n', "http(s)"),
        ('[[feed]]\nname = "x"\nurl = "ftp://example.org/a"\nformat = "cap"\n', "http(s)"),
        ('[[feed]]\nname = "x"\nformat = "cap"\n', "exactly one"),
        ('[[feed]]\nname = "x"\nurl = "https://a.org"\nformat = "pdf"\n', "format"),
        (
            '[[feed]]\nname = "x"\nurl = "https://a.org"\nformat = "cap"\ninterval_s = 1\n',
            "interval_s",
        ),
        ('[[feed]]\nname = "x"\nurl = "https://a.org"\nformat = "cap"\n' * 2, "repeat"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(FeedConfigError, match=problem):
            load_feeds(bad)
    with pytest.raises(FeedConfigError, match=r"missing\.toml: no such file"):
        load_feeds(tmp_path / "missing.toml")  # a mistyped path is not "no feeds"
    (tmp_path / "none.toml").write_text("# no feeds here\n")
    assert load_feeds(tmp_path / "none.toml") == []


def test_shipped_feeds_file_is_valid_and_disabled():
    feeds = load_feeds(PROJECT_ROOT / "config" / "feeds.toml")
    assert feeds and not any(f.enabled for f in feeds)


def test_file_feed(poll, db):
    path = FEEDS / "gdacs" / "gdacs-rss-2019-12-30-4items.xml"
    feed = Feed.model_validate({"name": "gdacs-file", "path": str(path), "format": "rss"})
    assert poll(feed) == "updated"
    assert "skipped 4" in db.get(FeedState, "gdacs-file").last_detail


def test_items_a_poll_refuses_are_counted_for_the_operator(poll, db, tmp_path):
    """A probe: a feed's level 4 refused (its identifier held by a consul's import that named
    no feed) left the poll saying "updated" and nothing else. The count of refused items is
    kept, and read by /metrics (anjeon_feed_rejected_items, AnjeonFeedItemsRejected)."""
    row = {
        "country_iso_alp2": "AF",
        "alarm_lvl": "4",
        "region_ty": "전체",
        "written_dt": "2024-01-01",
    }
    document = json.dumps({"resultCode": "00", "data": [row]}, ensure_ascii=False).encode()
    import_document(
        db,
        format_name="mofa",
        data=document.replace(b'"4"', b'"3"'),
        issued_by="consul-1",
        now=datetime.now(UTC),
        max_vertices=50_000,
        policy="auto",
    )
    path = tmp_path / "mofa.json"
    path.write_bytes(document)
    feed = Feed.model_validate({"name": "mofa-file", "path": str(path), "format": "mofa"})
    assert poll(feed) == "updated"
    state = db.get(FeedState, "mofa-file")
    assert state.rejected_items == 1 and "another source's advisory" in state.last_detail
    figures = read_queue(db.connection(), now=datetime.now(UTC))
    assert [(name, rejected) for name, *_, rejected, _unlisted in figures.feeds] == [
        ("mofa-file", 1)
    ]


def test_scheduler_has_one_job_per_enabled_feed(settings, engine, feed_server):
    feeds = [
        _feed(f"{feed_server}/cap", name="a"),
        _feed(f"{feed_server}/cap", name="b", enabled=False),
    ]
    scheduler = build_scheduler(settings, sessionmaker(bind=engine), feeds)
    ids = {job.id for job in scheduler.get_jobs()}
    assert "feed:a" in ids and "feed:b" not in ids


def test_feeds_api_lists_state_and_admin_can_poll(client, staff_headers, factory, feed_server):
    client.app.state.feeds = [_feed(f"{feed_server}/error", name="upstream")]
    client.app.state.session_factory = (
        factory  # polls outside the request, in the test's transaction
    )
    listed = client.get("/v1/feeds", headers=staff_headers("viewer")).json()
    assert listed["total"] == 1 and listed["limit"] == 100 and listed["offset"] == 0
    assert listed["items"][0]["name"] == "upstream" and listed["items"][0]["last_outcome"] is None
    assert (
        client.post("/v1/feeds/upstream/poll", headers=staff_headers("consul")).status_code == 403
    )
    polled = client.post("/v1/feeds/upstream/poll", headers=staff_headers("admin"))
    assert polled.status_code == 200 and polled.json()["last_outcome"] == "error"
    missing = client.post("/v1/feeds/nope/poll", headers=staff_headers("admin"))
    assert missing.status_code == 404
