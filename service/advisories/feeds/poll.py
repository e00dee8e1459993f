"""One poll of one feed: read its state, fetch outside any transaction, then ingest and
record the outcome in one short transaction."""

import hashlib
import logging
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from service.advisories.approval import Policy
from service.advisories.drafts import ExternalKey
from service.advisories.feeds.config import Feed
from service.advisories.feeds.fetch import FetchError, fetch, read_file
from service.advisories.ingest import FEED_ISSUER, IngestSummary, import_document
from service.advisories.models import FeedState
from service.errors import DomainError

log = logging.getLogger("anjeon.feeds")


def poll_feed(
    factory: sessionmaker[Session],
    feed: Feed,
    *,
    now: datetime,
    timeout_s: float,
    max_bytes: int,
    max_vertices: int,
    approval: Policy | None,
    min_reach: int,
) -> str:
    """Poll once; returns the outcome ('updated', 'not-modified' or 'error'). What the feed's
    approval policy (or `approval`, e.g. "auto" when approval is off) holds waits for a person."""
    with factory.begin() as session:
        state = session.get(FeedState, feed.name)
        etag = state.etag if state else None
        last_modified = state.last_modified if state else None
    try:
        if feed.path is not None:
            body, status = read_file(feed.path, max_bytes=max_bytes), 200
            etag, last_modified = None, None
        else:
            assert feed.url is not None
            fetched = fetch(
                feed.url,
                etag=etag,
                last_modified=last_modified,
                timeout_s=timeout_s,
                max_bytes=max_bytes,
                allow_private=feed.allow_private,
            )
            body, status = fetched.body, fetched.status
            etag, last_modified = fetched.etag or etag, fetched.last_modified or last_modified
    except (FetchError, OSError) as exc:
        _record(factory, feed, now=now, outcome="error", detail=str(exc))
        log.warning("feed fetch failed", extra={"feed": feed.name, "error": str(exc)})
        return "error"
    if status == 304:
        _record(factory, feed, now=now, outcome="not-modified", detail=None, success=True)
        return "not-modified"
    try:
        with factory.begin() as session:
            summary = import_document(
                session,
                format_name=feed.format,
                data=body,
                issued_by=f"{FEED_ISSUER}{feed.name}",
                now=now,
                max_vertices=max_vertices,
                level_overrides=feed.levels,
                policy=approval or feed.approval,
                min_reach=min_reach,
            )
            brief = _brief(summary)
            _save_state(
                session,
                feed,
                now=now,
                outcome="updated",
                detail=brief,
                etag=etag,
                last_modified=last_modified,
                success=True,
                content_hash=hashlib.sha256(body).hexdigest(),
                rejected=len(summary.rejected),
                listed=summary.listed,
            )
    except DomainError as exc:  # the whole document was unreadable or hostile
        _record(factory, feed, now=now, outcome="error", detail=exc.detail)
        log.warning("feed document refused", extra={"feed": feed.name, "error": exc.detail})
        return "error"
    except Exception as exc:  # a bug: its traceback goes to the log, the feed's state says so
        log.exception("feed import failed", extra={"feed": feed.name})
        detail = f"internal error ({type(exc).__name__}); the log has the traceback"
        _record(factory, feed, now=now, outcome="error", detail=detail)
        return "error"
    log.info("feed polled", extra={"feed": feed.name, "summary": brief})
    return "updated"


def is_stale(feed: Feed, state: FeedState | None, *, now: datetime) -> bool:
    """Its polls succeed, but its document has not changed for the feed's stale_after_s (a
    feed without one never is; nor one whose document was never read; nor one whose last poll
    failed: that one is failing, and says so)."""
    if feed.stale_after_s is None or state is None or state.changed_at is None:
        return False
    if state.last_outcome == "error":
        return False
    return (now - state.changed_at).total_seconds() > feed.stale_after_s


def _brief(summary: IngestSummary) -> str:
    text = summary.lines()[0]
    if summary.rejected:
        text += "; rejected: " + "; ".join(
            f"{label}: {why}" for label, why in summary.rejected[:20]
        )
    return text


def _record(
    factory: sessionmaker[Session],
    feed: Feed,
    *,
    now: datetime,
    outcome: str,
    detail: str | None,
    success: bool = False,
) -> None:
    with factory.begin() as session:
        state = session.get(FeedState, feed.name)
        if detail is None and success and state is not None:
            # A 304: the same document, and what was said of it stands (a review: the refused
            # items' reasons were wiped while their count, and its ticket, stayed).
            detail = state.last_detail
        _save_state(
            session,
            feed,
            now=now,
            outcome=outcome,
            detail=detail,
            etag=state.etag if state else None,
            last_modified=state.last_modified if state else None,
            success=success,
        )


def _save_state(
    session: Session,
    feed: Feed,
    *,
    now: datetime,
    outcome: str,
    detail: str | None,
    etag: str | None,
    last_modified: str | None,
    success: bool,
    content_hash: str | None = None,
    rejected: int | None = None,
    listed: list[ExternalKey] | Literal["as before"] | None = "as before",
) -> None:
    """`content_hash`: the document a successful poll read (None for a 304: the same one);
    `rejected`: how many of its items were refused (None: as before); `listed`: the message
    ids it lists (None: one page of several, so unknown)."""
    state = session.get(FeedState, feed.name) or FeedState(name=feed.name)
    state.etag, state.last_modified = etag, last_modified
    state.last_polled_at, state.last_outcome, state.last_detail = now, outcome, detail
    state.first_polled_at = state.first_polled_at or now
    if rejected is not None:
        state.rejected_items = rejected
    if listed != "as before":
        state.listed = None if listed is None else [[k.sender, k.identifier] for k in listed]
    if success:
        state.last_success_at = now
        if content_hash is not None and content_hash != state.content_hash:
            state.content_hash, state.changed_at = content_hash, now
        # Polled before the change was recorded (migration 0034): from now.
        state.changed_at = state.changed_at or now
    session.add(state)
    session.flush()
