"""Pieces every feed format shares: reading items, JSON, time parsing, text clean-up, polygon
unions."""

import html
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import shapely
from shapely.geometry import MultiPolygon, Polygon

from service.advisories.drafts import AdvisoryDraft, ParsedFeed, Rejected
from service.advisories.formats.safe_xml import InvalidDocument, UnreadableDocument
from service.errors import InvalidInput
from service.geo.areas import InvalidArea, check_geometry
from service.schema_rules import UNSHOWN

MAX_TEXT = 4000
# Real feeds nest less than 10 deep; Python's own recursion (json, repr) gives out near 1,000.
MAX_JSON_DEPTH = 64
ZONES_ONLY_NOTE = (
    "area given only by zone codes: no citizen is matched on them until zone polygons exist"
)


class ItemRejected(Exception):
    """One feed item cannot become an advisory; the reason is recorded, the rest still land."""


class ItemSkipped(ItemRejected):
    """A sound item our level tables map to no advisory (e.g. a GDACS Green alert)."""


# What a malformed item can raise while it is read: a missing member, a value of the wrong type,
# an unreadable or out-of-range value, a shape the area checks refuse. Anything else is a bug and
# propagates: it must reach the log with its traceback, not become a "rejected" line.
MALFORMED = (LookupError, TypeError, ValueError, OverflowError)


def read_item(
    result: ParsedFeed, label: str, read: Callable[..., AdvisoryDraft], *args: object
) -> None:
    """Adds read(*args), one item's draft, to the result, or records why it was skipped or
    rejected."""
    try:
        draft = read(*args)
    except ItemSkipped as exc:
        result.skipped.append(Rejected(label, str(exc)))
    except ItemRejected as exc:
        result.rejected.append(Rejected(label, str(exc)))
    except InvalidInput as exc:
        result.rejected.append(Rejected(label, exc.detail))
    except InvalidArea as exc:
        result.rejected.append(Rejected(label, str(exc)))
    except MALFORMED as exc:
        result.rejected.append(Rejected(label, f"malformed item ({type(exc).__name__}: {exc})"))
    else:
        result.drafts.append(draft)


def load_json(data: bytes) -> object:
    # PostgreSQL stores no NUL in text or JSON, and no feed has a reason to send one.
    if b"\x00" in data or re.search(rb"(?<!\\)\\u0000", data, flags=re.IGNORECASE):
        raise InvalidDocument("the document contains NUL (U+0000) characters")
    try:
        document = json.loads(data)
    except RecursionError:
        raise UnreadableDocument(f"JSON nested more than {MAX_JSON_DEPTH} deep") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidDocument(f"not valid JSON: {exc}") from exc
    if type(document) is dict or type(document) is list:
        _check_depth(document)
    return document


def _check_depth(document: object) -> None:
    """Level by level, without recursion: a document under the JSON parser's own limit may still
    be too deep for repr() or str() of a value (a 100k-vertex polygon takes ~35 ms)."""
    level, depth = [document], 1
    while level:
        level = [
            child
            for value in level
            for child in (value.values() if type(value) is dict else value)
            if type(child) is dict or type(child) is list
        ]
        depth += 1
        if level and depth > MAX_JSON_DEPTH:
            raise UnreadableDocument(f"JSON nested more than {MAX_JSON_DEPTH} deep")


def json_text(members: dict, key: str) -> str:
    """A text member of a JSON object ("" when absent or null; a number as its text). An object
    or a list where text belongs rejects the item."""
    value = members.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ItemRejected(f"{key} is text, not {type(value).__name__}")
    return str(value)


def parse_time(value: object, *, field: str) -> datetime:
    """ISO 8601 / RFC 3339 (CAP, GeoJSON) or RFC 822 (RSS) into an aware UTC datetime."""
    if not isinstance(value, str):
        raise ItemRejected(f"{field}: a time is a string, not {type(value).__name__}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            try:  # the State Department writes dates without a time: "Tue, 07 Oct 2025"
                parsed = datetime.strptime(text, "%a, %d %b %Y")
            except ValueError as exc:
                raise ItemRejected(f"{field}: unreadable time {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # "9999-12-31T23:00:00-05:00"
        raise ItemRejected(f"{field}: time out of range {value!r}") from exc


# A tag or a comment: "<" then a letter or "/" (a bare "<" is text: "levels < 3 and > 1").
_TAG = re.compile(r"<!--.*?-->|</?[a-zA-Z][^<>]*>", re.DOTALL)
# HTML's own elements, as feeds write them: escaped once more, only these are markup ("reply
# <YES>", "write to <desk@mofa.go.kr>" are words).
_HTML_TAG = re.compile(
    r"</?(?:a|b|big|blockquote|br|center|code|div|em|font|h[1-6]|hr|i|img|li|ol|p|pre|small"
    r"|span|strong|sub|sup|table|tbody|td|th|thead|tr|u|ul)\b[^<>]*>",
    re.IGNORECASE,
)
_LINE_END = re.compile(r"<br\s*/?>|</p>|</li>", re.IGNORECASE)


def _untagged(text: str, tag: re.Pattern[str] = _TAG) -> str:
    return html.unescape(tag.sub("", _LINE_END.sub("\n", text)))


def plain_text(value: str, limit: int = MAX_TEXT) -> str:
    """HTML (RSS descriptions, CAP text with <br />) to plain text, cut at a word. Markup a
    feed escaped once more (&lt;p&gt; inside the XML, and no real tag) comes out as tags the
    first time: HTML's own are taken off too, or a citizen's SMS would read "<p>Leave
    now</p>"."""
    text = _untagged(value)
    if not _TAG.search(value) and _HTML_TAG.search(text):
        text = _untagged(text, _HTML_TAG)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    # A feed's controls and bidi overrides went into the SMS as they came: a probe's U+202E
    # showed our own link reversed beside a readable fake one.
    text = UNSHOWN.sub("", re.sub("[\u2028\u2029]", "\n", text))
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = re.sub(r"\n\n+", "\n", text).strip()
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text


def union_of_rings(
    rings: Sequence[list[list[float]]], *, max_vertices: int, label: str
) -> MultiPolygon | None:
    """Feeds may send overlapping polygons in one area (any of them covers a point): each is
    validated on its own, then they are merged. An invalid one rejects the item (InvalidArea,
    which read_item records)."""
    parts: list[Polygon] = []
    for i, ring in enumerate(rings):
        checked = check_geometry(
            {"type": "Polygon", "coordinates": [ring]},
            field=f"{label}[{i}]",
            max_vertices=max_vertices,
        )
        parts.extend(checked.geoms)
    if not parts:
        return None
    merged = shapely.union_all(parts)
    polygons = [merged] if isinstance(merged, Polygon) else list(merged.geoms)
    return MultiPolygon([p for p in polygons if isinstance(p, Polygon)])
