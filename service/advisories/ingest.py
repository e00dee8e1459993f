"""Applying feed drafts: create, revise, cancel or skip each, by its (sender, identifier).

Each draft is applied in its own savepoint: a bad item is recorded as rejected and the rest of
the document still lands. A message already applied changes nothing (idempotent imports)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.advisories import approval, formats, reach, service
from service.advisories.approval import Policy
from service.advisories.drafts import AdvisoryDraft, ExternalKey, ParsedFeed
from service.advisories.models import Advisory, ExternalMessage
from service.audit import actors
from service.db import utcnow
from service.errors import DomainError
from service.geomatch import service as geomatch

FEED_ISSUER = actors.FEED  # issued_by of what a configured feed's poll stores: "feed:<name>"


@dataclass
class IngestSummary:
    created: list[Advisory] = field(default_factory=list)
    updated: list[Advisory] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, why)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[Advisory] = field(default_factory=list)
    enqueued: int = 0  # alert rows the created and revised advisories put in the ledger
    # The message ids the document lists at a level that makes an advisory; None for one page
    # of several (ParsedFeed.listed).
    listed: list[ExternalKey] | None = None

    def lines(self) -> list[str]:
        counts = (
            f"created {len(self.created)}, updated {len(self.updated)}, "
            f"skipped {len(self.skipped)}, rejected {len(self.rejected)}; "
            f"alerts enqueued {self.enqueued}"
        )
        detail = [f"  created {a.public_id}: level {a.level} {_title(a)}" for a in self.created]
        detail += [f"  updated {a.public_id} to revision {a.revision}" for a in self.updated]
        detail += [f"  skipped {label}: {why}" for label, why in self.skipped]
        detail += [f"  rejected {label}: {why}" for label, why in self.rejected]
        return [counts, *detail]


def import_document(
    session: Session,
    *,
    format_name: str | None,
    data: bytes,
    issued_by: str,
    now: datetime,
    max_vertices: int,
    level_overrides: Mapping[str, str | None] | None = None,
    policy: Policy = "staff",
    min_reach: int = 1000,
    for_feed: str | None = None,
) -> IngestSummary:
    """Parse a document in the named format (None: told from its content) and apply what it
    holds; what `policy` says must wait for a second person waits. Staff importing a feed's
    document while it is down name it (`for_feed`): that feed, back, takes the advisories over."""
    parsed = formats.parse(
        format_name, data, level_overrides=level_overrides, max_vertices=max_vertices
    )
    return ingest(
        session,
        parsed=parsed,
        issued_by=issued_by,
        now=now,
        policy=policy,
        min_reach=min_reach,
        for_feed=for_feed,
    )


def ingest(
    session: Session,
    *,
    parsed: ParsedFeed,
    issued_by: str,
    now: datetime,
    policy: Policy = "staff",
    min_reach: int = 1000,
    for_feed: str | None = None,
) -> IngestSummary:
    feed = issued_by.removeprefix(FEED_ISSUER) if issued_by.startswith(FEED_ISSUER) else for_feed
    summary = IngestSummary(
        rejected=[(r.label, r.reason) for r in parsed.rejected],
        skipped=[(s.label, s.reason) for s in parsed.skipped],
        listed=parsed.listed(),
    )
    with reach.one_registry_read(session):
        for draft in parsed.drafts:
            try:
                _apply_in_savepoint(
                    session,
                    draft,
                    issued_by=issued_by,
                    now=now,
                    summary=summary,
                    rule=(policy, min_reach),
                    feed=feed,
                )
            except DomainError as exc:
                summary.rejected.append((draft.label, exc.detail))
    # One matching pass for the whole document, in the same transaction, on the real clock:
    # replaying an archive "as of" its own date must never alert anyone about the past.
    changed = [*summary.created, *summary.updated]
    summary.enqueued = geomatch.match_advisories(
        session, advisories=changed, now=max(now, utcnow())
    ).enqueued
    return summary


FLAP_WINDOW = timedelta(hours=1)
# The uniqueness of a stored message id (sender, identifier): ExternalMessage's constraint, as
# PostgreSQL names it, and as SQLite words its breach.
_MESSAGE_ID_KEY = "uq_external_message_sender_identifier"
_MESSAGE_ID_COLUMNS = "external_message.sender, external_message.identifier"


def _apply_in_savepoint(session: Session, draft: AdvisoryDraft, **how: Any) -> None:
    """`_apply` in a savepoint of its own: a bad item rolls back alone. Once more if another
    transaction stored the same message id first (two feeds given back one staff identifier
    at once: a review's second poll failed as an internal error): applied again, it meets what
    the first stored, as if it had come after it."""
    try:
        with session.begin_nested():
            _apply(session, draft, **how)
    except IntegrityError as exc:
        diag = getattr(exc.orig, "diag", None)
        named = getattr(diag, "constraint_name", None)
        if named != _MESSAGE_ID_KEY and _MESSAGE_ID_COLUMNS not in str(exc.orig):
            raise
        with session.begin_nested():
            _apply(session, draft, **how)


def _apply(
    session: Session,
    draft: AdvisoryDraft,
    *,
    issued_by: str,
    now: datetime,
    summary: IngestSummary,
    rule: tuple[Policy, int],
    feed: str | None,
) -> None:
    known = _known(session, draft.external) if draft.external else None
    released = False
    if known is not None and not _may_act_on(session, known, draft, issued_by=issued_by):
        held = _held_from_the_feed(known, draft, issued_by=issued_by, now=now)
        if held in (ENDED_BY_STAFF, SAID_BY_STAFF):
            summary.unchanged.append(known)
            summary.skipped.append((draft.label, held))
            return
        if held is not None:
            summary.rejected.append((draft.label, held))
            return
        known, released = None, True
    if known is not None and not draft.revisable:
        summary.unchanged.append(known)
        summary.skipped.append((draft.label, "already imported"))
        return
    if draft.msg_type == "Cancel":
        target = _referenced(session, draft, issued_by=issued_by)
        if target is None:
            summary.rejected.append((draft.label, "cancels no advisory known here"))
            return
        if _late(session, draft, target, feed=feed, summary=summary, replacing=released):
            return
        service.cancel_advisory(session, advisory=target, cancelled_by=issued_by, now=now)
        _remember(session, draft, target, feed=feed, replacing=released)
        summary.updated.append(target)
        return
    if draft.expires is not None and draft.expires <= now:
        summary.skipped.append((draft.label, f"already expired at {draft.expires.isoformat()}"))
        return
    target = known or (
        _referenced(session, draft, issued_by=issued_by) if draft.msg_type == "Update" else None
    )
    if target is None:
        # An Update of an alert we never saw still carries the whole current picture.
        advisory = approval.issue(
            session,
            draft=draft,
            issued_by=issued_by,
            policy=rule[0],
            min_reach=rule[1],
            now=now,
            match=False,
        )
        _remember(session, draft, advisory, feed=feed, replacing=released)
        summary.created.append(advisory)
        return
    if known is None and _late(
        session, draft, target, feed=feed, summary=summary, replacing=released
    ):
        return
    waiting = approval.pending(session, target)
    if waiting is not None and waiting.proposed_by == issued_by:
        proposed = approval.draft_from_snapshot(waiting.content, source=target.source)
        if _same_content(proposed, draft):  # polled again while it waits: no new proposal
            summary.unchanged.append(target)
            summary.skipped.append((draft.label, "no change: waits for approval"))
            return
        if target.status == "active" and _same_content(service.draft_of(target), draft):
            # The feed is back to what is in force: what it proposed meanwhile is not its
            # word any more, and an approver must not put it in force later.
            approval.withdraw(session, advisory=target, by=issued_by, now=now)
            summary.unchanged.append(target)
            summary.skipped.append((draft.label, "no change: its proposal withdrawn"))
            return
    if _same_content(service.draft_of(target), draft):
        summary.unchanged.append(target)
        summary.skipped.append((draft.label, "no change"))
        return
    flapped_to = _flaps_back(target, draft, issued_by=issued_by)
    if flapped_to is not None:
        summary.unchanged.append(target)
        summary.skipped.append((draft.label, f"no change: back to revision {flapped_to}"))
        return
    approval.revise(
        session,
        advisory=target,
        draft=draft,
        changed_by=issued_by,
        policy=rule[0],
        min_reach=rule[1],
        now=now,
        match=False,
        replace_own=True,
    )
    if known is None:
        _remember(session, draft, target, feed=feed, replacing=released)
    summary.updated.append(target)


def _same_content(stored: AdvisoryDraft, new: AdvisoryDraft) -> bool:
    """Whether an import changes nothing (a change is a revision, and alerts again), times
    compared in UTC. An area stored before the Korean words of a bilingual CAP alert were kept
    has no `description_ko` key (a bilingual alert stored since always has it): their arrival
    alone is no change, or each such alert's next unchanged Update would alert everyone again.
    Its Korean readers get the English words until a real change comes."""
    before, after = stored.comparable(), new.comparable()
    if "description_ko" in after["area"] and "description_ko" not in before["area"]:
        after["area"] = {k: v for k, v in after["area"].items() if k != "description_ko"}
    return before == after


def _flaps_back(target: Advisory, draft: AdvisoryDraft, *, issued_by: str) -> int | None:
    """The revision of the last hour that a feed's republished item says again, word for word,
    if any: two caches of one upstream serving the item's old and new versions in turn (a
    probe's USGS quake, depth 10 km, then 11, then 10) made a revision and an SMS at each poll.
    The revision in force stays; a real change goes on being applied."""
    if not (draft.revisable and issued_by.startswith(FEED_ISSUER)):
        return None
    since = utcnow() - FLAP_WINDOW
    for earlier in target.revisions:
        if earlier.revision >= target.revision or (earlier.created_at or since) < since:
            continue
        said = approval.draft_from_snapshot(earlier.content, source=target.source)
        if _same_content(said, draft):
            return earlier.revision
    return None


def _late(
    session: Session,
    draft: AdvisoryDraft,
    target: Advisory,
    *,
    feed: str | None,
    summary: IngestSummary,
    replacing: bool = False,
) -> bool:
    """Whether an Update or Cancel was sent before a message already applied to `target` (held
    up on the way): then it is remembered, skipped and not applied. A late Update brought back
    the words a newer one had replaced and alerted everyone again; a late Cancel lifted a
    warning its sender had issued again since."""
    newest = session.scalar(
        select(func.max(ExternalMessage.sent)).where(ExternalMessage.advisory_id == target.id)
    )
    if draft.sent is None or newest is None or draft.sent >= newest:
        return False
    _remember(session, draft, target, feed=feed, replacing=replacing)
    summary.unchanged.append(target)
    summary.skipped.append((draft.label, "older than a message already applied"))
    return True


def _known(session: Session, key: ExternalKey) -> Advisory | None:
    return session.scalar(
        select(Advisory)
        .join(ExternalMessage, ExternalMessage.advisory_id == Advisory.id)
        .where(ExternalMessage.sender == key.sender, ExternalMessage.identifier == key.identifier)
    )


def _referenced(session: Session, draft: AdvisoryDraft, *, issued_by: str) -> Advisory | None:
    """The newest advisory this message may act on that any of its references points to."""
    found = [
        a
        for a in (_known(session, key) for key in draft.references)
        if a is not None and _may_act_on(session, a, draft, issued_by=issued_by)
    ]
    return max(found, key=lambda a: a.updated_at, default=None)


def _may_act_on(
    session: Session, advisory: Advisory, draft: AdvisoryDraft, *, issued_by: str
) -> bool:
    """Whether a message from `issued_by` may act on `advisory`. A document names its
    references and its sender itself: a probe's CAP feed named the MOFA feed's
    "0404.go.kr,AF:전체" and lifted its level 4 for Afghanistan, and a review's feed first sent a
    harmless alert as the ministry's sender. So a feed acts on its own advisories, never on
    another feed's, and on one staff imported only when staff named this feed at the import
    (`anjeon ingest --feed`, `?feed=`: its document, imported by hand while it was down).
    Staff imports act on any. And a test or exercise message never changes a real advisory
    (a probe's CAP <status>Test</status> Cancel lifted a real level 3)."""
    real = advisory.alerts_citizens and not advisory.exercise
    if real and (not draft.alerts_citizens or draft.exercise):
        return False
    stored_by = advisory.issued_by
    if not issued_by.startswith(FEED_ISSUER):
        return True
    if stored_by.startswith(FEED_ISSUER):
        return stored_by == issued_by
    stood_in_for = select(ExternalMessage.id).where(
        ExternalMessage.advisory_id == advisory.id,
        ExternalMessage.feed == issued_by.removeprefix(FEED_ISSUER),
    )
    return session.scalar(stood_in_for.limit(1)) is not None


TAKEN = "its identifier is another source's advisory"
ENDED_BY_STAFF = "no change: staff ended these same words"
SAID_BY_STAFF = "no change: staff's advisory in force says the same"


def _held_from_the_feed(
    advisory: Advisory, draft: AdvisoryDraft, *, issued_by: str, now: datetime
) -> str | None:
    """Why a feed's message may not take its identifier from `advisory`, which another source
    holds (None: the feed takes it, for an advisory of its own).

    A probe's consul imported a harmless MOFA row for Afghanistan by hand, naming no feed, and
    cancelled it, or a CAP <status>Test</status> naming the ministry's sender and "IQ:전체":
    the MOFA feed's level 4 for both was refused for good, with no error. So a staff import
    that never alerted anyone (a test), or that no longer stands (cancelled, expired, or a
    proposal rejected), gives the identifier back when the feed says something else. When it
    says the same words, staff's ending stands (a review: a cancelled copy came back and
    alerted everyone again). A staff advisory that stands, or an exercise, keeps it: the
    item is skipped when staff's words in force are the same, else rejected, and counted in
    anjeon_feed_rejected_items (staff then cancel theirs, and the feed's next poll takes
    over, or revise theirs). Another feed's, always."""
    if not issued_by.startswith(FEED_ISSUER) or advisory.issued_by.startswith(FEED_ISSUER):
        return TAKEN
    if not draft.alerts_citizens or draft.exercise or draft.external is None:
        return TAKEN
    if not advisory.alerts_citizens:
        return None
    if advisory.exercise:
        return TAKEN
    ended = advisory.expires is not None and advisory.expires <= now
    same = _same_content(service.draft_of(advisory), draft)
    if advisory.status in ("draft", "pending_approval", "active") and not ended:
        return SAID_BY_STAFF if same and advisory.status == "active" else TAKEN
    return ENDED_BY_STAFF if same else None


def _remember(
    session: Session,
    draft: AdvisoryDraft,
    advisory: Advisory,
    *,
    feed: str | None,
    replacing: bool = False,
) -> None:
    """The message applied to `advisory`; `replacing`: its identifier was staff's, given back
    to this feed (_held_from_the_feed), and is the feed's advisory's from now on."""
    if draft.external is None:
        return
    if replacing:
        session.execute(
            delete(ExternalMessage).where(
                ExternalMessage.sender == draft.external.sender,
                ExternalMessage.identifier == draft.external.identifier,
            )
        )
    session.add(
        ExternalMessage(
            sender=draft.external.sender,
            identifier=draft.external.identifier,
            advisory_id=advisory.id,
            msg_type=draft.msg_type,
            sent=draft.sent,
            feed=feed,
        )
    )
    session.flush()


def _title(advisory: Advisory) -> str:
    return (advisory.title_en or advisory.title_ko or "")[:80]
