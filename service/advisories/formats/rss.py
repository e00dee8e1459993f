"""RSS feeds to advisory drafts: the US State Department travel advisories and GDACS GeoRSS.

Parsed with the same hardened XML parser as CAP (no DTDs, entities or external references),
so no RSS library is needed. State Department country tags are FIPS 10-4, mapped to ISO;
GDACS carries ISO alpha-3 (one code even when several countries are named)."""

import re
from collections.abc import Mapping
from datetime import timedelta
from xml.etree.ElementTree import Element

from service.advisories.drafts import AdvisoryDraft, ExternalKey, ParsedFeed
from service.advisories.formats import levels
from service.advisories.formats.common import (
    ItemRejected,
    ItemSkipped,
    parse_time,
    plain_text,
    read_item,
    union_of_rings,
)
from service.advisories.formats.geojson import usgs_radius_km
from service.advisories.formats.safe_xml import InvalidDocument, parse_xml, text_of
from service.geo import countries, names
from service.geo.areas import Area, check_circle

_LEVEL = re.compile(r"Level\s+([1-4])", re.IGNORECASE)
_MAGNITUDE = re.compile(r"Magnitude\s+([0-9.]+)", re.IGNORECASE)
_GDACS_CATEGORY = {
    "EQ": "disaster",
    "TC": "disaster",
    "FL": "disaster",
    "VO": "disaster",
    "DR": "disaster",
    "WF": "disaster",
    "TS": "disaster",
}
GDACS_DAYS_AFTER = 7  # a GDACS event stays an advisory this long after its last date
STATE_DEPT_SENDER = "travel.state.gov"
US_LEVEL_NAMES = {
    "1": "Exercise Normal Precautions",
    "2": "Exercise Increased Caution",
    "3": "Reconsider Travel",
    "4": "Do Not Travel",
}


def parse_rss(
    data: bytes,
    *,
    level_overrides: Mapping[str, str | None] | None = None,
    max_vertices: int = 50_000,
) -> ParsedFeed:
    root = parse_xml(data)
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise InvalidDocument("expected an RSS 2.0 document with a <channel>")
    items = channel.findall("item")
    is_gdacs = any(item.find("alertlevel") is not None for item in items)
    result = ParsedFeed()
    for i, item in enumerate(items):
        label = text_of(item, "guid") or text_of(item, "title") or f"item[{i}]"
        if is_gdacs:
            read_item(result, label[:200], _gdacs, item, level_overrides, max_vertices)
        else:
            read_item(result, label[:200], _state_dept, item, level_overrides)
    return result


def state_dept_countries(item: Element, title: str) -> tuple[str, ...]:
    """ISO codes from the FIPS 10-4 Country-Tag, else from the country name in the title."""
    for category in item.findall("category"):
        if category.get("domain") == "Country-Tag" and category.text:
            code = names.fips_to_iso().get(category.text.strip())
            if code:
                return (code,)
    name = title.split(" - ")[0].strip()
    codes = names.codes_for_name(name)
    if not codes:
        raise ItemRejected(f"no country for {name!r} (Country-Tag missing or unknown)")
    return codes


def _state_dept(item: Element, overrides: Mapping[str, str | None] | None) -> AdvisoryDraft:
    title = text_of(item, "title")
    threat = next(
        (c.text or "" for c in item.findall("category") if c.get("domain") == "Threat-Level"), ""
    )
    match = _LEVEL.search(threat) or _LEVEL.search(title)
    if not match:
        raise ItemRejected("no advisory level in the title or Threat-Level")
    us_level = match.group(1)
    codes = state_dept_countries(item, title)
    code = codes[0]
    level = levels.level_for(levels.US_STATE_DEPT, us_level, overrides)
    if level is None:
        raise ItemSkipped(f"US level {us_level} ({US_LEVEL_NAMES[us_level]}): no advisory")
    by_code = {c.code: c for c in countries.boundaries().countries}
    name_ko = by_code[code].name_ko if code in by_code else code
    link = text_of(item, "link")
    return AdvisoryDraft(
        level=level,
        category="security",
        title={
            "en": plain_text(title, 300),
            "ko": f"{name_ko}: 미국 국무부 여행경보 {us_level}단계",
        },
        message={
            "en": plain_text(text_of(item, "description")) + (f"\n{link}" if link else ""),
            "ko": f"미국 국무부가 {name_ko}에 여행경보 {us_level}단계"
            f"({US_LEVEL_NAMES[us_level]})를 발령했습니다. {link}",
        },
        area=Area(countries=codes, description=title.split(" - ")[0]),
        effective=parse_time(text_of(item, "pubDate"), field="pubDate"),
        expires=None,
        source="rss",
        external=ExternalKey(STATE_DEPT_SENDER, code),
        label=f"state-dept {code} ({title.split(' - ')[0]})",
        revisable=True,
    )


def _gdacs(
    item: Element, overrides: Mapping[str, str | None] | None, max_vertices: int
) -> AdvisoryDraft:
    alert = text_of(item, "alertlevel")
    level = levels.level_for(levels.GDACS_ALERT, alert, overrides)
    if level is None:
        raise ItemSkipped(f"GDACS {alert} alert: no advisory")
    event_type, event_id = text_of(item, "eventtype"), text_of(item, "eventid")
    if not event_type or not event_id:
        raise ItemRejected("no gdacs:eventtype / gdacs:eventid")
    country = names.alpha3_to_alpha2(text_of(item, "iso3")) if text_of(item, "iso3") else None
    named = text_of(item, "country")
    title = plain_text(text_of(item, "title"), 300)
    start = parse_time(text_of(item, "fromdate") or text_of(item, "pubDate"), field="fromdate")
    end = parse_time(text_of(item, "todate") or text_of(item, "fromdate"), field="todate")
    # Offshore events carry the nearest country's code: the area is the shape, never the country.
    notes = (f"GDACS country: {named} ({country or '?'})",) if named else ()
    return AdvisoryDraft(
        level=level,
        category=_GDACS_CATEGORY.get(event_type, "other"),
        title={"en": title},
        message={
            "en": plain_text(text_of(item, "description")) + f"\n{text_of(item, 'link')}",
        },
        area=_gdacs_area(item, event_type, max_vertices, named, notes),
        effective=start,
        expires=max(end, start) + timedelta(days=GDACS_DAYS_AFTER),
        source="rss",
        external=ExternalKey("gdacs.org", f"{event_type}{event_id}"),
        label=f"gdacs {event_type}{event_id}",
        revisable=True,
    )


def _gdacs_area(
    item: Element, event_type: str, max_vertices: int, named: str, notes: tuple[str, ...]
) -> Area:
    point = text_of(item, "point").split()
    if event_type == "EQ" and len(point) == 2:
        match = _MAGNITUDE.search(text_of(item, "severity") or text_of(item, "title"))
        radius = usgs_radius_km(float(match.group(1))) if match else 100.0
        circle = check_circle(float(point[0]), float(point[1]), radius, field="point")
        return Area(circles=(circle,), description=named, notes=notes)
    bbox = text_of(item, "bbox").split()
    if len(bbox) != 4:
        raise ItemRejected("no gdacs:bbox for a non-earthquake event")
    lon_min, lon_max, lat_min, lat_max = (float(v) for v in bbox)
    ring = [
        [lon_min, lat_min],
        [lon_max, lat_min],
        [lon_max, lat_max],
        [lon_min, lat_max],
        [lon_min, lat_min],
    ]
    geometry = union_of_rings([ring], max_vertices=max_vertices, label="bbox")
    return Area(geometry=geometry, description=named, notes=notes)
