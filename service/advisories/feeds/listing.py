"""Which of a feed's advisories its source no longer lists. A MOFA travel alarm or a State
Department level has no end of its own: it stands until the source says otherwise, and a
source says so by dropping the item from its list, or listing it at a level that makes no
advisory (State Department level 1). Nothing ends such an advisory by itself, since a list
that comes back empty or short from a fault upstream would lift every warning in it, and an
item lifted by mistake that comes back says the same words, which stay ended: staff see the
unlisted ones (GET /v1/feeds, anjeon_feed_unlisted_advisories) and end them."""

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory, ExternalMessage

# An advisory waiting for approval counts: approved, it would put an unlisted item in force.
STANDING = ("active", "pending_approval")


def unlisted(
    connection: Connection | Session,
    *,
    feed: str,
    listed: list[list[str]] | None,
    failing: bool,
) -> list[str]:
    """Public ids of the feed's advisories standing or waiting for approval, with no end of
    their own, none of whose message ids its last document read listed. None listed (no whole
    document read yet), or a feed whose last poll failed: none. Staff import a failing feed's
    document by hand in its stead, and its list is not that document's (a review's stand-ins
    were named for cancelling); AnjeonFeedFailing speaks for it meanwhile."""
    if listed is None or failing:
        return []
    keys = {(sender, identifier) for sender, identifier in listed}
    rows = connection.execute(
        select(Advisory.public_id, ExternalMessage.sender, ExternalMessage.identifier)
        .join(ExternalMessage, ExternalMessage.advisory_id == Advisory.id)
        .where(
            ExternalMessage.feed == feed,
            Advisory.status.in_(STANDING),
            Advisory.expires.is_(None),
        )
        .order_by(Advisory.id)
    ).all()
    seen: dict[str, bool] = {}
    for public_id, sender, identifier in rows:
        seen[public_id] = seen.get(public_id, False) or (sender, identifier) in keys
    return [public_id for public_id, found in seen.items() if not found]
