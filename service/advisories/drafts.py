"""The one shape every advisory takes before it is stored: staff input and each feed format
produce drafts; the advisory service validates and applies them."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.advisories.levels import is_urgent
from service.geo.areas import Area

CATEGORIES = ("security", "disaster", "health", "other")
LANGUAGES = ("ko", "en")


# CAP 1.2's values of <severity> and <urgency>; anything else a feed writes is not kept.
CAP_SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CAP_URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")


def cap_term(value: str, terms: tuple[str, ...]) -> str:
    """The CAP term `value` names (in CAP's spelling, whatever the case), or ""."""
    return next((t for t in terms if t.lower() == value.strip().lower()), "")


@dataclass(frozen=True)
class ExternalKey:
    sender: str
    identifier: str


@dataclass
class AdvisoryDraft:
    level: str
    category: str
    title: dict[str, str]
    message: dict[str, str]
    area: Area
    effective: datetime
    expires: datetime | None
    source: str = "manual"
    alerts_citizens: bool = True
    # Feed messages only: their identity, kind (Alert / Update / Cancel) and what they amend.
    external: ExternalKey | None = None
    msg_type: str = "Alert"
    references: list[ExternalKey] = field(default_factory=list)
    label: str = ""  # how summaries and rejections name the item
    # When a CAP or NWS message was sent: an Update older than one already applied to its
    # advisory is not applied (a late one brought back words that a newer one had replaced).
    sent: datetime | None = None
    # The feed republishes the item under the same identifier when it changes (RSS, GeoJSON,
    # MOFA); CAP messages never change once sent.
    revisable: bool = False
    # CAP's <severity> and <urgency> (CAP feeds only): Extreme asks for a check-in, Immediate
    # ignores quiet hours, whatever level the feed's table gave the alert.
    severity: str = ""
    urgency: str = ""
    # A drill (staff's "exercise": true, CAP status Exercise): only citizens who opted in to
    # exercises get it, every message marked as one.
    exercise: bool = False
    # reach_area() of (level, area): the country look-up is remembered while neither changes
    # (a create or a PATCH asks for it several times).
    _reach: tuple[str, Area, Area] | None = field(default=None, repr=False, compare=False)

    def reach_area(self) -> Area:
        """The area matching uses: at levels 3, 4 and special it also reaches the citizens
        known only by the country of which it covers a part (a Tokyo circle tells those
        registered as "JP"); lower levels do not."""
        if self._reach is None or self._reach[0] != self.level or self._reach[1] is not self.area:
            reach = self.area.reaching_country_only(is_urgent(self.level))
            self._reach = (self.level, self.area, reach)
        return self._reach[2]

    def content(self) -> dict:
        """The revision snapshot, with the area as matched (country_only included). CAP terms
        only when given, so other advisories' snapshots stay as they were."""
        cap: dict[str, object] = {
            k: v for k, v in (("severity", self.severity), ("urgency", self.urgency)) if v
        }
        if self.exercise:
            cap["exercise"] = True
        return {
            "level": self.level,
            "category": self.category,
            "title": dict(self.title),
            "message": dict(self.message),
            "area": self.reach_area().to_json(),
            "effective": self.effective.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "alerts_citizens": self.alerts_citizens,
            **cap,
        }

    def comparable(self) -> dict:
        """content() with its times in UTC and without what follows from the rest: two drafts
        with equal comparable() change nothing. A feed writes +09:00 where the database gives
        back UTC: compared as written, a MOFA list polled again, unchanged, was a new revision
        and alerted every citizen in every listed country at each poll."""
        content = self.content()
        content["area"].pop("country_only", None)  # follows from the level and the shapes
        for name in ("effective", "expires"):
            value: datetime | None = getattr(self, name)
            content[name] = value.astimezone(UTC).isoformat() if value is not None else None
        return content


@dataclass
class Rejected:
    label: str
    reason: str


@dataclass
class ParsedFeed:
    """What a format made of a document: drafts, and the items it could not use, with why."""

    drafts: list[AdvisoryDraft] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: list[Rejected] = field(default_factory=list)
    # False when the document is one page of several (MOFA's totalCount above its rows): what
    # it does not list may still be on another page.
    whole: bool = True

    def listed(self) -> list[ExternalKey] | None:
        """The message ids the document lists at a level that makes an advisory (a State
        Department level 1 makes none); None for one page of several."""
        if not self.whole:
            return None
        return [draft.external for draft in self.drafts if draft.external is not None]
