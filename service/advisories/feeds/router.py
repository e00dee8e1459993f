"""Feeds for staff: what is configured and how each poll went; admins can poll one now."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.advisories.feeds import listing
from service.advisories.feeds.config import Feed
from service.advisories.feeds.poll import is_stale, poll_feed
from service.advisories.models import FeedState
from service.advisories.schemas import Page
from service.auth import AdminWithoutSession, SessionDep, Viewer
from service.db import read_first, utcnow
from service.errors import NotFound

router = APIRouter(prefix="/v1/feeds", tags=["feeds"])


class FeedRead(BaseModel):
    name: str
    source: str
    format: str
    interval_s: int
    enabled: bool
    last_polled_at: datetime | None
    last_success_at: datetime | None
    last_outcome: str | None
    last_detail: str | None
    # When a poll last brought a document different from the one before; stale: unchanged
    # for longer than the feed's stale_after_s (its upstream may have frozen).
    changed_at: datetime | None
    stale_after_s: int | None
    stale: bool
    # The feed's advisories with no end of their own that its last document read did not list
    # at a level that makes one: its source no longer says them, and staff end them.
    unlisted: list[str]


def _read(session: Session, feed: Feed) -> FeedRead:
    state = session.get(FeedState, feed.name)
    return FeedRead(
        name=feed.name,
        source=feed.shown_source,
        format=feed.format,
        interval_s=feed.interval_s,
        enabled=feed.enabled,
        last_polled_at=state.last_polled_at if state else None,
        last_success_at=state.last_success_at if state else None,
        last_outcome=state.last_outcome if state else None,
        last_detail=state.last_detail if state else None,
        changed_at=state.changed_at if state else None,
        stale_after_s=feed.stale_after_s,
        stale=feed.enabled and is_stale(feed, state, now=utcnow()),
        unlisted=listing.unlisted(
            session,
            feed=feed.name,
            listed=state.listed if state else None,
            failing=state is not None and state.last_outcome == "error",
        ),
    )


@router.get("", response_model=Page[FeedRead])
def list_feeds(
    request: Request,
    session: SessionDep,
    _staff: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[FeedRead]:
    """The feeds file's feeds, in its order, each with its state: a list like every other."""
    feeds = request.app.state.feeds
    items = [_read(session, f) for f in feeds[offset : offset + limit]]
    return Page(total=len(feeds), limit=limit, offset=offset, items=items)


@router.post("/{name}/poll", response_model=FeedRead)
async def poll_now(request: Request, name: str, _admin: AdminWithoutSession) -> FeedRead:
    """Poll a configured feed now (by name: no URL is ever taken from a request). No request
    session: the fetch runs outside any transaction, the poll opens its own short ones."""
    feed = next((f for f in request.app.state.feeds if f.name == name), None)
    if feed is None:
        raise NotFound(f"no feed named {name!r} in the feeds file")
    state = request.app.state
    await run_in_threadpool(
        poll_feed,
        state.session_factory,
        feed,
        now=utcnow(),
        timeout_s=state.settings.feed_timeout_s,
        max_bytes=state.settings.feed_max_bytes,
        max_vertices=state.settings.max_area_vertices,
        approval=state.settings.approval_policy(feed.approval),
        min_reach=state.settings.feed_approval_min_reach,
    )
    with state.session_factory() as session, read_first(session):
        return _read(session, feed)
