"""The preview staff decide on: whom an advisory would reach (by channel, language and country
of the matched place) and what its SMS would cost, rendered as citizens would get it. Nothing
is stored."""

import hashlib
import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime

import numpy as np
import shapely
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.advisories import reach
from service.advisories.approval import under_review
from service.advisories.drafts import AdvisoryDraft
from service.advisories.models import Advisory
from service.advisories.schemas import Preview, SmsCost
from service.advisories.service import draft_of
from service.citizens.models import Citizen
from service.dispatch.content import LANGUAGES, AlertContent
from service.dispatch.recipients import shown_source
from service.dispatch.render import Renderer
from service.geo.areas import Area

# Links of the lengths a real send carries (only their length counts): an alert's details link
# (an id of up to 8 digits and its 24-character tag), and a check-in link (a token is at most 31
# characters while citizen and advisory ids stay below 2^21, service/dispatch/checkin_tokens.py).
_DETAILS_SAMPLE = "/a/" + "0" * 8 + "." + "0" * 24
_CHECKIN_SAMPLE = "/c/" + "0" * 31
_CHUNK = 5_000  # ids per query: SQLite takes at most 32,766 bound parameters


def content_of_draft(draft: AdvisoryDraft, *, public_id: str, revision: int) -> AlertContent:
    """What a citizen's message says for this draft, as the dispatcher reads a stored revision
    (service/dispatch/recipients.py)."""
    data = draft.content()
    return AlertContent(
        advisory_public_id=public_id,
        revision=revision,
        kind="update" if revision > 1 else "new",
        level=data["level"],
        title=data["title"],
        message=data["message"],
        area=data["area"],
        source="",
        expires=draft.expires,
        severity=data.get("severity") or "",
        urgency=data.get("urgency") or "",
        exercise=bool(data.get("exercise")),
    )


def preview(
    session: Session,
    *,
    draft: AdvisoryDraft,
    renderer: Renderer,
    base_url: str,
    now: datetime,
    content: AlertContent | None = None,
) -> Preview:
    """Whom the draft would reach, and the SMS it would cost (`content`: its words, when they
    are stored already)."""
    found = reach.reach_once_in_effect(session, draft, now=now)
    # A key of its own: the renderer caches by advisory and revision, and a draft's words change
    # under the same ones.
    words = replace(
        content or content_of_draft(draft, public_id="", revision=1),
        advisory_public_id=f"preview-{uuid.uuid4()}",
    )
    link = base_url.rstrip("/") + (_CHECKIN_SAMPLE if words.asks_checkin else _DETAILS_SAMPLE)

    def segments(language: str, part_of: str = "") -> int:
        rendered = renderer.sms(
            words, language=language, link=link, part_of=part_of, ask=words.asks_checkin
        )
        return rendered.segments or 0

    by_language: Counter[str] = Counter()
    by_country: Counter[str] = Counter()
    cost: Counter[tuple[str, str]] = Counter()  # SMS recipients by (language, part_of)
    partly = set(words.area.get("country_only") or ())
    for citizen_id, language, sms in _people(session, found.citizen_ids):
        by_language[language] += 1
        country, only = _matched_country(found, citizen_id)
        by_country[country or "unknown"] += 1
        if sms:
            cost[(language, country if only and country in partly else "")] += 1
    return Preview(
        citizens=len(found.citizen_ids),
        by_channel=found.by_channel,
        by_language=dict(by_language.most_common()),
        by_country=dict(by_country.most_common()),
        sms=SmsCost(
            segments={language: segments(language) for language in LANGUAGES},
            messages=sum(count * segments(*key) for key, count in cost.items()),
        ),
    )


def preview_advisory(
    session: Session, *, advisory: Advisory, renderer: Renderer, base_url: str, now: datetime
) -> Preview:
    """The preview of a stored advisory (a draft, one pending approval, or one in force): of
    what waits for approval when something does, else of its current content."""
    draft = under_review(session, advisory) or draft_of(advisory)
    content = content_of_draft(draft, public_id=advisory.public_id, revision=advisory.revision)
    content = replace(content, source=shown_source(advisory.issued_by))
    return preview(
        session, draft=draft, renderer=renderer, base_url=base_url, now=now, content=content
    )


def _people(session: Session, ids: np.ndarray) -> list[tuple[int, str, bool]]:
    """(id, language, takes SMS now) of each citizen: alerted by SMS and not opted out."""
    found = []
    for start in range(0, len(ids), _CHUNK):
        chunk = [int(i) for i in ids[start : start + _CHUNK]]
        rows = session.execute(
            select(
                Citizen.id,
                Citizen.language,
                Citizen.notify_sms & Citizen.sms_opted_out_at.is_(None),
            ).where(Citizen.id.in_(chunk))
        )
        found += [(cid, language, bool(sms)) for cid, language, sms in rows]
    return found


def _matched_country(found: reach.Reach, citizen_id: int) -> tuple[str, bool]:
    """The country of the place that reached the citizen, and whether it is a country only."""
    index = found.place_of.get(citizen_id)
    places = found.places
    if index is None or places is None:
        return "", False
    return str(places.countries[index]), bool(np.isnan(places.lats[index]))


def area_summary(area: Area) -> str:
    """What the audit log says of a previewed area: its countries and provinces, the bounds of
    its polygon (with its vertices and a digest of its shape, so that two shapes in one box
    read apart) and its circles, to 4 decimals (about 10 m)."""
    parts = []
    if area.countries:
        parts.append("countries " + ",".join(area.countries))
    if area.subdivisions:
        parts.append("provinces " + ",".join(area.subdivisions))
    if area.geometry is not None and not area.geometry.is_empty:
        west, south, east, north = area.geometry.bounds
        shape = hashlib.sha256(area.geometry.wkb).hexdigest()[:8]
        vertices = shapely.get_num_coordinates(area.geometry)
        parts.append(
            f"polygon {shape} of {vertices} points, lon {west:.4f}..{east:.4f}"
            f" lat {south:.4f}..{north:.4f}"
        )
    parts += [f"circle {c.lat:.4f},{c.lon:.4f} r {c.radius_km:g} km" for c in area.circles]
    return "area " + ("; ".join(parts) or "empty")
