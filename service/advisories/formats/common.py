"""Pieces every feed format shares: time parsing, text clean-up, polygon unions."""

import html
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import shapely
from shapely.geometry import MultiPolygon, Polygon

from service.advisories.formats.safe_xml import InvalidDocument
from service.geo.areas import check_geometry

MAX_TEXT = 4000
ZONES_ONLY_NOTE = (
    "area given only by zone codes: no citizen is matched on them until zone polygons exist"
)


class ItemRejected(Exception):
    """One feed item cannot become an advisory; the reason is recorded, the rest still land."""


class ItemSkipped(ItemRejected):
    """A sound item our level tables map to no advisory (e.g. a GDACS Green alert)."""


def load_json(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidDocument(f"not valid JSON: {exc}") from exc


def parse_time(value: str, *, field: str) -> datetime:
    """ISO 8601 / RFC 3339 (CAP, GeoJSON) or RFC 822 (RSS) into an aware UTC datetime."""
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
    return parsed.astimezone(UTC)


def plain_text(value: str, limit: int = MAX_TEXT) -> str:
    """HTML (RSS descriptions, CAP text with <br />) to plain text, cut at a word."""
    text = re.sub(r"<br\s*/?>|</p>|</li>", "\n", value, flags=re.IGNORECASE)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = re.sub(r"\n\n+", "\n", text).strip()
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text


def union_of_rings(
    rings: Sequence[list[list[float]]], *, max_vertices: int, label: str
) -> MultiPolygon | None:
    """Feeds may send overlapping polygons in one area (any of them covers a point): each is
    validated on its own, then they are merged. An invalid one rejects the item."""
    parts: list[Polygon] = []
    for i, ring in enumerate(rings):
        try:
            checked = check_geometry(
                {"type": "Polygon", "coordinates": [ring]},
                field=f"{label}[{i}]",
                max_vertices=max_vertices,
            )
        except Exception as exc:
            raise ItemRejected(str(getattr(exc, "detail", exc))) from exc
        parts.extend(checked.geoms)
    if not parts:
        return None
    merged = shapely.union_all(parts)
    polygons = [merged] if isinstance(merged, Polygon) else list(merged.geoms)
    return MultiPolygon([p for p in polygons if isinstance(p, Polygon)])
