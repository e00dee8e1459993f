"""CAP's vocabulary, read one way wherever it arrives: CAP XML (cap.py) and the NWS API's
CAP-in-JSON (geojson.py). Categories, severity to level, message types, status, texts."""

import re
from collections.abc import Mapping
from datetime import datetime

from service.advisories.drafts import AdvisoryDraft, ExternalKey
from service.advisories.formats import levels
from service.advisories.formats.common import ItemRejected, ItemSkipped, plain_text
from service.geo.areas import Area

# All twelve CAP 1.2 <category> values (OASIS CAP 1.2 §3.2.2) onto our four categories.
CATEGORIES: dict[str, str] = {
    "Geo": "disaster",
    "Met": "disaster",
    "Fire": "disaster",
    "Env": "disaster",
    "Infra": "disaster",
    "Safety": "security",
    "Security": "security",
    "Rescue": "security",
    "Transport": "security",
    "CBRNE": "security",
    "Health": "health",
    "Other": "other",
}
MESSAGE_TYPES = ("Alert", "Update", "Cancel")  # Ack and Error carry no advisory
# An Update that is the all clear: its event is a cancellation or an all clear (NTWC's
# "Tsunami Cancellation"), or its headline begins so. Such words elsewhere are not: a
# probe's "Typhoon warning remains in force; all ferries cancelled" lifted a level 3.
_ALL_CLEAR_EVENT = re.compile(r"\bcancell?ation\b|\ball[ -]clear\b", re.IGNORECASE)
_ALL_CLEAR_HEADLINE = re.compile(r"^\W*all[ -]clear\b", re.IGNORECASE)


def category(value: str | None) -> str:
    return CATEGORIES.get((value or "").strip(), "other")


def level(severity: str | None, overrides: Mapping[str, str | None] | None) -> str:
    """Our level for a CAP <severity>; ItemSkipped when the table (or the feed) says none."""
    severity = severity or "Unknown"
    found = levels.level_for(levels.CAP_SEVERITY, severity, overrides)
    if found is None:
        raise ItemSkipped(f"severity {severity}: no advisory")
    return found


def message_type(
    value: str | None, *, event: str = "", headline: str = "", responses: tuple[str, ...] = ()
) -> str:
    """Alert, Update or Cancel. An "all clear" sent as an Update means a Cancel (NTWC sends its
    tsunami cancellations so): responseType AllClear, or an event or headline that says so."""
    msg_type = value or "Alert"
    if msg_type not in MESSAGE_TYPES:
        raise ItemRejected(f"msgType {msg_type} carries no advisory")
    if msg_type == "Update" and (
        "AllClear" in responses
        or _ALL_CLEAR_EVENT.search(event)
        or _ALL_CLEAR_HEADLINE.search(headline)
    ):
        return "Cancel"
    return msg_type


def alerts_citizens(status: str | None) -> bool:
    """Actual and Exercise messages alert (an exercise only those who opted in); Test, System
    and Draft messages are stored but never alert anyone."""
    return status in ("Actual", "Exercise")


def exercise(status: str | None) -> bool:
    """An Exercise message is a drill: marked as one, for citizens who opted in only."""
    return status == "Exercise"


def texts(
    *, headline: str | None, event: str | None, description: str | None, instruction: str | None
) -> tuple[str, str]:
    """(title, message): the headline (else the event), then description and instruction."""
    title = plain_text(headline or event or "Alert", 300)
    parts = (description, instruction)
    body = "\n\n".join(p for p in parts if p and p.lower() != "not applicable")
    return title, plain_text(body or title)


def cancellation(
    *,
    sent: datetime | None,
    source: str,
    alerts_citizens: bool,
    exercise: bool,
    external: ExternalKey,
    references: list[ExternalKey],
    label: str,
) -> AdvisoryDraft:
    """A Cancel needs no <info> and no area: only what it cancels (its references) and when."""
    if sent is None:
        raise ItemRejected("a cancellation needs <sent>")
    return AdvisoryDraft(
        level="1",
        category="other",
        title={},
        message={},
        area=Area(),
        effective=sent,
        expires=None,
        msg_type="Cancel",
        sent=sent,
        source=source,
        alerts_citizens=alerts_citizens,
        exercise=exercise,
        external=external,
        references=references,
        label=label,
    )
