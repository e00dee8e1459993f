from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import sessionmaker

from service.advisories.feeds.poll import poll_feed


@pytest.fixture
def factory(db):
    """Sessions inside the test's transaction (each begin() is a savepoint), for poll_feed."""
    return sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def poll(factory):
    """poll(feed, **limits) -> the outcome of one poll_feed, now, in the test's transaction.
    Nothing waits for approval unless a test says so (approval=None: the feed's own policy)."""

    def run(feed, **limits):
        options = {
            # Seconds, not half of one: on a busy CI machine a 0.5 s poll of a quick server
            # failed by its deadline ("took longer than 0.5 s in all").
            "timeout_s": 3.0,
            "max_bytes": 5 * 1024 * 1024,
            "max_vertices": 50_000,
            "approval": "auto",
            "min_reach": 10_000,
        }
        return poll_feed(factory, feed, now=datetime.now(UTC), **{**options, **limits})

    return run
