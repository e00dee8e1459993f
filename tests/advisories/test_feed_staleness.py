"""A feed whose upstream froze polls without error, so it is told apart by its document: when a
poll last brought one different from the one before (a 304 is no change). A feed with
`stale_after_s` whose document has not changed for longer is stale in GET /v1/feeds (and in
the metrics behind AnjeonFeedStale, tests/operations)."""

from datetime import UTC, datetime, timedelta

import pytest

from service.advisories.feeds.config import Feed, FeedConfigError, load_feeds
from service.advisories.feeds.poll import poll_feed
from service.advisories.models import FeedState
from tests.advisories.feed_samples import current_cap
from tests.loopback_server import QuietHandler, loopback_http


class Upstream(QuietHandler):
    """Serves /cap: the same document until `version` moves (its ETag with it); a request
    with the current ETag gets a 304. Any other path: 404."""

    version = 1

    def do_GET(self):
        if self.path != "/cap":
            self.reply(404)
            return
        etag = f'"v{type(self).version}"'
        if self.headers.get("If-None-Match") == etag:
            self.reply(304)
            return
        body = current_cap() + f"<!-- version {type(self).version} -->".encode()
        self.reply(200, body, [("ETag", etag)])


@pytest.fixture
def upstream():
    Upstream.version = 1
    with loopback_http(Upstream) as base:
        yield f"{base}/cap"


def _feed(url: str, **overrides) -> Feed:
    values = {"name": "frozen", "url": url, "format": "cap", "allow_private": True}
    return Feed.model_validate({**values, **overrides})


def _poll(factory, feed: Feed, at: datetime) -> str:
    return poll_feed(
        factory,
        feed,
        now=at,
        timeout_s=3.0,
        max_bytes=5 * 1024 * 1024,
        max_vertices=50_000,
        approval="auto",
        min_reach=10_000,
    )


def test_only_a_different_document_moves_changed_at(factory, db, upstream):
    feed, t0 = _feed(upstream), datetime.now(UTC) - timedelta(hours=3)
    assert _poll(factory, feed, t0) == "updated"
    state = db.get(FeedState, "frozen")
    first_hash = state.content_hash
    assert state.changed_at == t0 and len(first_hash) == 64

    assert _poll(factory, feed, t0 + timedelta(minutes=30)) == "not-modified"  # a 304
    db.expire_all()
    assert db.get(FeedState, "frozen").changed_at == t0

    # The same bytes without the ETag's help (a server that sends none): no change either.
    db.get(FeedState, "frozen").etag = None
    db.flush()
    assert _poll(factory, feed, t0 + timedelta(hours=1)) == "updated"
    db.expire_all()
    state = db.get(FeedState, "frozen")
    assert state.changed_at == t0 and state.content_hash == first_hash
    assert state.last_success_at == t0 + timedelta(hours=1)

    Upstream.version = 2
    assert _poll(factory, feed, t0 + timedelta(hours=2)) == "updated"
    db.expire_all()
    state = db.get(FeedState, "frozen")
    assert state.changed_at == t0 + timedelta(hours=2) and state.content_hash != first_hash


def test_a_feed_unchanged_past_its_stale_after_is_stale_to_staff(
    client, staff_headers, factory, db, upstream
):
    watched = _feed(upstream, interval_s=60, stale_after_s=3600)
    unwatched = _feed(upstream, name="quiet")  # no stale_after_s: never stale
    client.app.state.feeds = [watched, unwatched]
    client.app.state.session_factory = factory
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    for feed in (watched, unwatched):
        assert _poll(factory, feed, long_ago) == "updated"
        assert _poll(factory, feed, datetime.now(UTC)) == "not-modified"  # fine, but the same

    page = client.get("/v1/feeds", headers=staff_headers("viewer")).json()
    listed = {f["name"]: f for f in page["items"]}
    assert listed["frozen"]["stale"] is True and listed["frozen"]["stale_after_s"] == 3600
    assert listed["frozen"]["last_outcome"] == "not-modified"
    assert datetime.fromisoformat(listed["frozen"]["changed_at"]) == long_ago
    assert listed["quiet"]["stale"] is False and listed["quiet"]["stale_after_s"] is None

    Upstream.version = 2  # the upstream moves again
    polled = client.post("/v1/feeds/frozen/poll", headers=staff_headers("admin"))
    assert polled.status_code == 200
    assert polled.json()["stale"] is False and polled.json()["last_outcome"] == "updated"


def test_a_failed_poll_leaves_the_change_alone_and_a_failing_feed_is_not_stale(
    client, staff_headers, factory, db, upstream
):
    watched = _feed(upstream, interval_s=60, stale_after_s=3600)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    assert _poll(factory, watched, long_ago) == "updated"
    broken = _feed(upstream.replace("/cap", "/missing"), interval_s=60, stale_after_s=3600)
    Upstream.version = 2  # a new document upstream, that the failing poll never reads
    assert _poll(factory, broken, datetime.now(UTC)) == "error"  # a 404, same feed name
    db.expire_all()
    assert db.get(FeedState, "frozen").changed_at == long_ago

    # Failing, it is AnjeonFeedFailing's: the list says error, not stale.
    client.app.state.feeds = [watched]
    client.app.state.session_factory = factory
    [listed] = client.get("/v1/feeds", headers=staff_headers("viewer")).json()["items"]
    assert listed["last_outcome"] == "error" and listed["stale"] is False


def test_a_feed_polled_before_changes_were_kept_counts_from_its_next_poll(factory, db, upstream):
    # As migration 0034 leaves a feed: its ETag known, no document hash, no change time.
    assert _poll(factory, _feed(upstream), datetime.now(UTC) - timedelta(days=1)) == "updated"
    state = db.get(FeedState, "frozen")
    state.content_hash = state.changed_at = None
    db.flush()
    now = datetime.now(UTC)
    assert _poll(factory, _feed(upstream), now) == "not-modified"
    db.expire_all()
    assert db.get(FeedState, "frozen").changed_at == now


def test_a_disabled_feed_is_never_stale(client, staff_headers, factory, upstream):
    off = _feed(upstream, interval_s=60, stale_after_s=3600, enabled=False)
    assert _poll(factory, off, datetime.now(UTC) - timedelta(hours=5)) == "updated"
    client.app.state.feeds = [off]
    client.app.state.session_factory = factory
    [listed] = client.get("/v1/feeds", headers=staff_headers("viewer")).json()["items"]
    assert listed["enabled"] is False and listed["stale"] is False
    assert listed["changed_at"] is not None


@pytest.mark.parametrize("stale_after_s", [30, 300, 899])
def test_stale_after_must_cover_two_polls_and_five_minutes(tmp_path, stale_after_s):
    path = tmp_path / "feeds.toml"
    path.write_text(
        '[[feed]]\nname = "a"\nurl = "https://example.org/a"\nformat = "cap"\n'
        f"interval_s = 300\nstale_after_s = {stale_after_s}\n"
    )
    with pytest.raises(FeedConfigError, match="stale_after_s"):
        load_feeds(path)
    path.write_text(
        path.read_text().replace(f"stale_after_s = {stale_after_s}", "stale_after_s = 900")
    )
    assert load_feeds(path)[0].stale_after_s == 900  # 2 × 300 + 300
