"""Four eyes: what waits for a second person before anyone is alerted, and the decisions on it.

A new advisory that waits is stored with status `pending_approval` and its proposal; a revision
that waits is only a proposal, and the revision in force stays in force until it is approved.
The person who proposed cannot approve it. Cancelling never waits (and voids what was pending)."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from service.advisories import reach, service
from service.advisories.drafts import AdvisoryDraft
from service.advisories.levels import is_urgent
from service.advisories.lifecycle import check_draft
from service.advisories.models import Advisory, AdvisoryProposal
from service.audit import actors
from service.audit import service as audit
from service.errors import Conflict, Forbidden, InvalidInput
from service.geo import areas
from service.geomatch import service as geomatch
from service.ledger.models import Alert
from service.staff.models import StaffKey

# Who decides whether something waits: staff (and their imports) by level and reach; a feed by
# its configured policy.
Policy = Literal["staff", "auto", "required", "level3+"]


@dataclass(frozen=True)
class Decided:
    """What became of a proposal, for telling the person who proposed it."""

    advisory_public_id: str
    title: str
    kind: str
    decision: Literal["approved", "rejected"]
    proposed_by: str
    decided_by: str
    reason: str | None


def needs_approval(
    session: Session,
    draft: AdvisoryDraft,
    *,
    policy: Policy,
    min_reach: int,
    now: datetime,
    in_force: Advisory | None = None,
) -> bool:
    """Whether this content must wait for a second person before it alerts anyone; a revision
    of an urgent advisory (`in_force`) waits as the urgent words did, whatever its own level:
    one consul alone must not turn an approved level 4 into "no need to leave". A revision's
    words reach everyone the advisory already told, whatever its new area: its all-clear on a
    cancel, a roll call, their pages. They count with those it reaches (a review: one consul
    moved an approved level 2 to an empty sea, reaching nobody, so it went at once, then
    cancelled it, and its 16 alerted citizens got the all-clear in words nobody approved)."""
    if policy == "auto":
        return False
    told = np.empty(0, dtype=np.int64)
    if in_force is not None and in_force.alerts_citizens:
        if is_urgent(in_force.level):
            return True
        told = _already_told(session, in_force, at_most=min_reach + 1)
        if len(told) > min_reach:
            return True
    if not draft.alerts_citizens:
        return False
    if policy == "required" or is_urgent(draft.level):
        return True
    # "staff" and a feed's "level3+" alike: reaching many waits too (a probe's feed sent a
    # level 2 over the whole earth to everyone at once); the caller gives each its threshold.
    found = reach.reach_once_in_effect(session, draft, now=now)
    return len(np.union1d(found.citizen_ids, told)) > min_reach


def _already_told(session: Session, advisory: Advisory, *, at_most: int) -> np.ndarray:
    """Citizens the advisory's alerts are for (any revision, sent or queued), at most
    `at_most` of them: past the threshold, how many more does not matter."""
    of_it = Alert.advisory_id == advisory.id
    # In the order of the ledger's unique index, so that the scan stops at the LIMIT: DISTINCT
    # with a LIMIT alone was planned on PostgreSQL as a walk of the whole table's citizen index
    # (a review: 0.3 s at 1.5 M rows, for an advisory of 900 citizens).
    window = at_most * 8
    seen = session.scalars(
        select(Alert.citizen_id)
        .where(of_it)
        .order_by(Alert.advisory_id, Alert.revision, Alert.citizen_id)
        .limit(window)
    ).all()
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    if len(ids) >= at_most or len(seen) < window:
        return ids[:at_most]
    # Many rows a citizen (revisions, channels, roll-call rounds): this advisory's rows, all of
    # them (OFFSET 0 keeps PostgreSQL reading them by the advisory, not the whole table).
    rows = select(Alert.citizen_id).where(of_it).offset(0).subquery()
    found = session.scalars(select(rows.c.citizen_id).distinct().limit(at_most)).all()
    return np.asarray(found, dtype=np.int64)


def pending(session: Session, advisory: Advisory) -> AdvisoryProposal | None:
    return session.scalar(
        select(AdvisoryProposal).where(
            AdvisoryProposal.advisory_id == advisory.id, AdvisoryProposal.status == "pending"
        )
    )


def under_review(session: Session, advisory: Advisory) -> AdvisoryDraft | None:
    """What waits for approval, as a draft (None when nothing waits): the preview and the test
    send show this, since it is what the approver decides on."""
    waiting = pending(session, advisory)
    return draft_from_snapshot(waiting.content, source=advisory.source) if waiting else None


def issue(
    session: Session,
    *,
    draft: AdvisoryDraft,
    issued_by: str,
    policy: Policy,
    min_reach: int,
    now: datetime,
    as_draft: bool = False,
    match: bool = True,
) -> Advisory:
    """A new advisory: a draft (never sent), one waiting for approval, or active at once."""
    if as_draft:
        return service.create_advisory(
            session, draft=draft, issued_by=issued_by, now=now, status="draft"
        )
    if needs_approval(session, draft, policy=policy, min_reach=min_reach, now=now):
        advisory = service.create_advisory(
            session, draft=draft, issued_by=issued_by, now=now, status="pending_approval"
        )
        _propose(session, advisory, kind="issue", draft=draft, by=issued_by, now=now)
        return advisory
    return service.create_advisory(session, draft=draft, issued_by=issued_by, now=now, match=match)


def revise(
    session: Session,
    *,
    advisory: Advisory,
    draft: AdvisoryDraft,
    changed_by: str,
    policy: Policy,
    min_reach: int,
    now: datetime,
    match: bool = True,
    replace_own: bool = False,
) -> Advisory:
    """New content for an advisory: a draft changes in place (only its author changes it); an
    active advisory gets a new revision now (and whatever revision waited is superseded), or a
    proposal that waits, one at a time. What waits is never changed under the approver's eyes,
    except by a feed (`replace_own`) whose newer message replaces its own proposal."""
    service.lock_advisory(session, advisory)
    if advisory.status == "draft":
        if advisory.issued_by != changed_by:
            raise Forbidden(
                f"only {advisory.issued_by}, who wrote this draft, changes it: the second "
                "person must be someone who did not write it"
            )
        check_draft(draft, now=now)
        return service.rewrite_draft(session, advisory=advisory, draft=draft, now=now)
    waiting = pending(session, advisory)
    if advisory.status == "pending_approval":
        if waiting is None or not replace_own or waiting.proposed_by != changed_by:
            raise Conflict(
                "the advisory waits for approval: it is approved or rejected first (a change "
                "now would be approved unread)"
            )
        check_draft(draft, now=now)
        service.rewrite_draft(session, advisory=advisory, draft=draft, now=now)
        _replace(session, advisory, waiting, draft=draft, now=now)
        return advisory
    if not needs_approval(
        session, draft, policy=policy, min_reach=min_reach, now=now, in_force=advisory
    ):
        revised = service.revise_advisory(
            session, advisory=advisory, draft=draft, changed_by=changed_by, now=now, match=match
        )
        if waiting is not None:  # approving it later would undo this revision
            _decide(
                waiting,
                advisory,
                decision="rejected",
                by=changed_by,
                reason=f"superseded by revision {advisory.revision}",
                now=now,
            )
        return revised
    service.check_revisable(advisory, now=now)
    check_draft(draft, now=now)
    if waiting is not None:
        if not replace_own or waiting.proposed_by != changed_by:
            raise Conflict(
                f"a revision proposed by {waiting.proposed_by} waits for approval: it is "
                "approved or rejected first"
            )
        _replace(session, advisory, waiting, draft=draft, now=now)
        return advisory
    _propose(session, advisory, kind="revise", draft=draft, by=changed_by, now=now)
    return advisory


def submit(
    session: Session,
    *,
    advisory: Advisory,
    by: str,
    min_reach: int,
    now: datetime,
    policy: Policy = "staff",
) -> Advisory:
    """A draft moves on: to approval, or active (and sent) at once. The one who presses submit
    proposes it; neither they nor the draft's author approve it (a probe's second consul
    submitted another's draft and approved it alone)."""
    service.lock_advisory(session, advisory)
    if advisory.status != "draft":
        raise Conflict(f"only a draft is submitted; this advisory is {advisory.status}")
    draft = service.draft_of(advisory)
    check_draft(draft, now=now)
    if needs_approval(session, draft, policy=policy, min_reach=min_reach, now=now):
        advisory.status = "pending_approval"
        _propose(session, advisory, kind="issue", draft=draft, by=by, now=now)
        return advisory
    advisory.status = "active"
    advisory.updated_at = now
    session.flush()
    geomatch.match_advisories(session, advisories=[advisory], now=now)
    return advisory


def approve(
    session: Session,
    *,
    advisory: Advisory,
    by: str,
    now: datetime,
    proposal_id: int,
) -> Decided:
    """A second person approves what waits, named by `proposal_id` (the `pending.id` the
    approver read): the advisory becomes active, or the revision comes into force; matching
    and sending start. What waits under another id (replaced, or proposed anew after a
    revision superseded the one read) is a 409, never approved unread: without the id a
    probe's proposer swapped in "EVACUATE NOW" after the approver had read the first."""
    proposal = _waiting(session, advisory)
    if proposal.id != proposal_id:
        raise Conflict("what waits has changed since it was read: read it again")
    if proposal.proposed_by == by:
        raise Forbidden("the key that proposed this cannot approve it: a second person must")
    if proposal.kind == "issue" and advisory.issued_by == by:
        raise Forbidden("the key that wrote this cannot approve it: a second person must")
    proposers = {proposal.proposed_by}
    if proposal.kind == "issue":
        proposers.add(advisory.issued_by)
    _check_not_handed_by_proposer(session, by=by, proposers=proposers, now=now)
    draft = draft_from_snapshot(proposal.content, source=advisory.source)
    if proposal.kind == "issue":
        check_draft(draft, now=now)
        advisory.status = "active"
        advisory.updated_at = now
        session.flush()
        geomatch.match_advisories(session, advisories=[advisory], now=now)
    else:
        service.revise_advisory(
            session, advisory=advisory, draft=draft, changed_by=proposal.proposed_by, now=now
        )
    return _decide(proposal, advisory, decision="approved", by=by, reason=None, now=now)


# A key's secret issued by the proposer this recently is one they have seen: an admin who
# reissued a colleague's key approved their own level 4 with it, in the colleague's name (a
# probe). After a day its holder has had it (and the console warned them of a new secret).
FRESH_SECRET = timedelta(days=1)


def _check_not_handed_by_proposer(
    session: Session, *, by: str, proposers: set[str], now: datetime
) -> None:
    # Up the chain of fresh secrets: a second admin key the proposer made today, which then
    # reissued the colleague's key, hands it over just the same (a review).
    name, way = by, []
    while len(way) < _CHAIN_MOST:
        issued_by, issued_at = session.execute(
            select(StaffKey.issued_by, StaffKey.issued_at).where(StaffKey.name == name)
        ).one_or_none() or (None, None)
        if issued_by is None or issued_at is None or now - issued_at >= FRESH_SECRET:
            return
        if issued_by in proposers:
            through = f" (by way of {', '.join(way)})" if way else ""
            raise Forbidden(
                f"this key's secret was issued by {issued_by} less than a day ago{through}, so "
                "they have seen it: it cannot approve what they proposed; a second person "
                "must, with a key of their own"
            )
        if issued_by in way or issued_by == by:
            return
        way.append(issued_by)
        name = issued_by


_CHAIN_MOST = 10


def reject(
    session: Session,
    *,
    advisory: Advisory,
    by: str,
    role: str,
    client: str,
    reason: str,
    now: datetime,
) -> Decided:
    """A second person turns down what waits, saying why (the reason goes to the audit log): a
    new advisory is `rejected`; a revision is dropped and the one in force stays."""
    reason = reason.strip()
    if not 3 <= len(reason) <= 500:
        raise InvalidInput("reason", "say why, in 3 to 500 characters")
    proposal = _waiting(session, advisory)
    if proposal.proposed_by == by:
        raise Forbidden(
            "the key that proposed this cannot decide on it: cancel the advisory instead"
        )
    audit.record(
        session,
        actor=by,
        role=role,
        client=client,
        action="reject advisory",
        subject=advisory.public_id,
        reason=reason,
        now=now,
    )
    if proposal.kind == "issue":
        advisory.status = "rejected"
        advisory.updated_at = now
    return _decide(proposal, advisory, decision="rejected", by=by, reason=reason, now=now)


log = logging.getLogger("anjeon.advisories.approval")
LAPSED_BY = f"{actors.SYSTEM}expiry"


def withdraw(session: Session, *, advisory: Advisory, by: str, now: datetime) -> Decided:
    """Its proposer takes back what waits (a feed whose newer message is the content in force
    again): closed as rejected, so nobody can approve it later."""
    proposal = _waiting(session, advisory)
    if proposal.proposed_by != by:
        raise Conflict(f"what waits was proposed by {proposal.proposed_by}, not {by}")
    return _decide(
        proposal, advisory, decision="rejected", by=by, reason="withdrawn by its source", now=now
    )


def lapse_ended_proposals(session: Session, *, now: datetime) -> list[Decided]:
    """Turn down what waits for approval but ends before anyone approved it (an approval then
    answers 422 "expires: is in the past", so it sat in the queue for ever): a new advisory
    becomes `expired`, a revision is dropped and the one in force stays; each is audited.
    Returns each decision, for telling its proposer once committed."""
    lapsed: list[Decided] = []
    waiting = session.execute(
        select(AdvisoryProposal.advisory_id, AdvisoryProposal.content).where(
            AdvisoryProposal.status == "pending"
        )
    ).all()
    for advisory_id, content in waiting:
        expires = content.get("expires")
        try:
            ends = datetime.fromisoformat(expires) if expires else None
        except (TypeError, ValueError):  # never stored so; it must not stop the expiry job
            log.error("a proposal's end cannot be read", extra={"advisory_id": advisory_id})
            continue
        if ends is None or ends > now:
            continue
        advisory = session.get(Advisory, advisory_id)
        if advisory is None:
            continue
        # As a decision does: an approval now waits, or came first.
        service.lock_advisory(session, advisory)
        proposal = pending(session, advisory)
        if proposal is None or proposal.content.get("expires") != expires:
            continue
        reason = "it ended before anyone approved it"
        audit.record(
            session,
            actor=LAPSED_BY,
            role="system",
            client="-",
            action="lapse advisory proposal",
            subject=advisory.public_id,
            reason=reason,
            now=now,
        )
        if proposal.kind == "issue":
            advisory.status = "expired"
            advisory.updated_at = now
        lapsed.append(
            _decide(proposal, advisory, decision="rejected", by=LAPSED_BY, reason=reason, now=now)
        )
    return lapsed


def draft_from_snapshot(content: dict, *, source: str) -> AdvisoryDraft:
    """The draft a revision snapshot or proposal describes."""
    area = dict(content["area"])
    area.pop("country_only", None)  # follows from the level and the shapes
    expires = content.get("expires")
    return AdvisoryDraft(
        level=str(content["level"]),
        category=content["category"],
        title=dict(content.get("title") or {}),
        message=dict(content.get("message") or {}),
        area=areas.area_from_json(area),
        effective=datetime.fromisoformat(content["effective"]),
        expires=datetime.fromisoformat(expires) if expires else None,
        source=source,
        alerts_citizens=bool(content.get("alerts_citizens", True)),
        severity=content.get("severity") or "",
        urgency=content.get("urgency") or "",
        exercise=bool(content.get("exercise")),
    )


def _propose(
    session: Session,
    advisory: Advisory,
    *,
    kind: Literal["issue", "revise"],
    draft: AdvisoryDraft,
    by: str,
    now: datetime,
) -> AdvisoryProposal:
    proposal = AdvisoryProposal(
        advisory_id=advisory.id,
        kind=kind,
        content=service.snapshot(draft),
        proposed_by=by,
        proposed_at=now,
        status="pending",
    )
    session.add(proposal)
    session.flush()
    session.expire(advisory, ["proposals"])
    return proposal


def _replace(
    session: Session,
    advisory: Advisory,
    waiting: AdvisoryProposal,
    *,
    draft: AdvisoryDraft,
    now: datetime,
) -> None:
    """A feed's newer message replaces its own proposal: the old one is closed and a new one
    (a new id) waits, so an approval names what it approves."""
    _decide(
        waiting, advisory, decision="rejected", by=waiting.proposed_by, reason="replaced", now=now
    )
    _propose(session, advisory, kind=waiting.kind, draft=draft, by=waiting.proposed_by, now=now)  # type: ignore[arg-type]


def _waiting(session: Session, advisory: Advisory) -> AdvisoryProposal:
    service.lock_advisory(session, advisory)
    proposal = pending(session, advisory)
    if proposal is None:
        raise Conflict("nothing of this advisory waits for approval")
    return proposal


def _decide(
    proposal: AdvisoryProposal,
    advisory: Advisory,
    *,
    decision: Literal["approved", "rejected"],
    by: str,
    reason: str | None,
    now: datetime,
) -> Decided:
    proposal.status = decision
    proposal.decided_by = by
    proposal.decided_at = now
    proposal.reason = reason
    object_session(advisory).flush()  # type: ignore[union-attr]
    object_session(advisory).expire(advisory, ["proposals"])  # type: ignore[union-attr]
    return Decided(
        advisory_public_id=advisory.public_id,
        title=advisory.title_en or advisory.title_ko or "",
        kind=proposal.kind,
        decision=decision,
        proposed_by=proposal.proposed_by,
        decided_by=by,
        reason=reason,
    )
