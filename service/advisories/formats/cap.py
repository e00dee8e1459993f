"""CAP 1.2 and 1.1 (OASIS Common Alerting Protocol) alerts to advisory drafts.

One <alert> is one message. Its <info> blocks are languages (ko and en are kept); the area is
the union of the primary block's <area>s: <polygon> and <circle> (written "lat,lon": swapped in
_position, the one place), ISO 3166 <geocode>s as countries, other geocodes kept as zone codes;
its words for Korean readers are the Korean block's <areaDesc>s.
Status Exercise is a drill (only citizens who opted in, every message marked); Test, Draft and
System are stored but never alert citizens."""

import re
from collections.abc import Mapping
from dataclasses import replace
from xml.etree.ElementTree import Element

from service.advisories.drafts import (
    CAP_SEVERITIES,
    CAP_URGENCIES,
    AdvisoryDraft,
    ExternalKey,
    ParsedFeed,
    cap_term,
)
from service.advisories.formats import cap_terms
from service.advisories.formats.common import (
    ZONES_ONLY_NOTE,
    ItemRejected,
    parse_time,
    read_item,
    union_of_rings,
)
from service.advisories.formats.safe_xml import InvalidDocument, parse_xml, text_of
from service.geo import countries, names, subdivisions
from service.geo.areas import Area, Circle, check_circle

# A CAP circle of radius 0 marks a point (an epicentre); we reach people this close to it.
POINT_RADIUS_KM = 25.0
MAX_AREA_WORDS = 1000  # characters of <areaDesc> kept, per language
_ISO_GEOCODE = re.compile(r"iso.?3166|iso\.org", re.IGNORECASE)
# Zone systems whose codes begin with their country's ISO 3166 alpha-2: MeteoAlarm's EMMA_ID and
# Eurostat's NUTS (which writes Greece EL and the United Kingdom UK).
_COUNTRY_PREFIXED_ZONE = re.compile(r"(?:EMMA_ID|NUTS[0-3]?):([A-Z]{2})", re.IGNORECASE)
_NUTS_COUNTRIES = {"EL": "GR", "UK": "GB"}


def parse_cap(
    data: bytes,
    *,
    level_overrides: Mapping[str, str | None] | None = None,
    max_vertices: int = 50_000,
) -> ParsedFeed:
    root = parse_xml(data)
    if root.tag != "alert":
        raise InvalidDocument(f"expected a CAP <alert>, found <{root.tag}>")
    identifier, sender = text_of(root, "identifier"), text_of(root, "sender")
    if not identifier:
        raise InvalidDocument("the CAP alert has no <identifier>")
    if not sender:
        raise InvalidDocument("the CAP alert has no <sender>")
    # One alert, never a list of what stands: nothing else it does not name has ended.
    result = ParsedFeed(whole=False)
    label = f"{sender},{identifier}"
    read_item(result, label, _draft, root, sender, identifier, level_overrides, max_vertices)
    return result


def references_of(text: str) -> list[ExternalKey]:
    """'sender,identifier,sent' triples, space-separated."""
    keys = []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) >= 2:
            keys.append(ExternalKey(parts[0], parts[1]))
    return keys


def _draft(
    root: Element,
    sender: str,
    identifier: str,
    level_overrides: Mapping[str, str | None] | None,
    max_vertices: int,
) -> AdvisoryDraft:
    infos = root.findall("info")
    first = infos[0] if infos else None
    msg_type = cap_terms.message_type(
        text_of(root, "msgType"),
        event=text_of(first, "event"),
        headline=text_of(first, "headline"),
        responses=tuple(
            (r.text or "").strip()
            for r in (first.findall("responseType") if first is not None else [])
        ),
    )
    sent = parse_time(text_of(root, "sent"), field="sent") if text_of(root, "sent") else None
    identity = {
        "source": "cap",
        "alerts_citizens": cap_terms.alerts_citizens(text_of(root, "status")),
        "exercise": cap_terms.exercise(text_of(root, "status")),
        "external": ExternalKey(sender, identifier),
        "references": references_of(text_of(root, "references")),
        "label": f"{sender},{identifier}",
    }
    if msg_type == "Cancel":  # a Cancel may have no <info>
        return cap_terms.cancellation(sent=sent, **identity)
    if not infos:
        raise ItemRejected("an Alert or Update needs at least one <info>")
    by_language = {_language(i): i for i in reversed(infos)}
    ko = next((i for lang, i in by_language.items() if lang.startswith("ko")), None)
    en = next((i for lang, i in by_language.items() if lang.startswith("en")), None)
    primary = en or ko or infos[0]
    notes = []
    title, message = {}, {}
    for lang, info in (("ko", ko), ("en", en)):
        if info is not None:
            title[lang], message[lang] = _texts(info)
    if not title:
        title["en"], message["en"] = _texts(primary)
        notes.append(f"text only in {_language(primary)}")
    level = cap_terms.level(text_of(primary, "severity"), level_overrides)
    effective_text = text_of(primary, "effective")
    effective = parse_time(effective_text, field="effective") if effective_text else sent
    if effective is None:
        raise ItemRejected("no <effective> and no <sent> time")
    expires_text = text_of(primary, "expires")
    area = _area(primary, max_vertices=max_vertices, notes=notes)
    if ko is not None and ko is not primary:
        # The shapes come from the primary block; a Korean reader gets the Korean block's words.
        area = replace(area, description_ko=_area_descriptions(ko)[:MAX_AREA_WORDS])
    return AdvisoryDraft(
        level=level,
        category=cap_terms.category(text_of(primary, "category")),
        title=title,
        message=message,
        area=area,
        effective=effective,
        expires=parse_time(expires_text, field="expires") if expires_text else None,
        msg_type=msg_type,
        sent=sent,
        severity=cap_term(text_of(primary, "severity"), CAP_SEVERITIES),
        urgency=cap_term(text_of(primary, "urgency"), CAP_URGENCIES),
        **identity,
    )


def _language(info: Element) -> str:
    return (text_of(info, "language") or "en-US").lower()


def _texts(info: Element) -> tuple[str, str]:
    return cap_terms.texts(
        headline=text_of(info, "headline"),
        event=text_of(info, "event"),
        description=text_of(info, "description"),
        instruction=text_of(info, "instruction"),
    )


def _position(pair: str) -> list[float]:
    """CAP writes 'lat,lon'; GeoJSON and shapely want [lon, lat]. The only swap."""
    lat, lon = (float(v) for v in pair.split(","))
    return [lon, lat]


def _area_descriptions(info: Element) -> str:
    """The block's <areaDesc>s, joined."""
    return "; ".join(d for d in (text_of(a, "areaDesc") for a in info.findall("area")) if d)


def _area(info: Element, *, max_vertices: int, notes: list[str]) -> Area:
    rings, circles, codes, provinces, zones = [], [], [], [], []
    for area in info.findall("area"):
        for polygon in area.findall("polygon"):
            if not (polygon.text or "").strip():
                continue  # NWS sends <polygon></polygon> when a warning has no shape
            try:
                rings.append([_position(p) for p in polygon.text.split()])
            except ValueError as exc:
                raise ItemRejected(f"unreadable <polygon>: {exc}") from exc
        for circle in area.findall("circle"):
            circles.append(_circle(circle.text or ""))
        for geocode in area.findall("geocode"):
            name, value = text_of(geocode, "valueName"), text_of(geocode, "value")
            if _ISO_GEOCODE.search(name) and countries.normalise_code(value):
                codes.append(countries.normalise_code(value))
            elif _ISO_GEOCODE.search(name) and subdivisions.normalise_code(value):
                provinces.append(subdivisions.normalise_code(value))
            elif value:
                zones.append(f"{name}:{value}")
    geometry = union_of_rings(rings, max_vertices=max_vertices, label="polygon")
    description = _area_descriptions(info)
    if geometry is not None or circles:
        # A shape is precise; an ISO geocode beside it names the country or state it lies in
        # (CAP-AU sends AU-NSW with a 25 km fire circle). Alerting all of it would be wrong.
        zones = [f"ISO3166:{c}" for c in (*codes, *provinces)] + zones
        codes, provinces = [], []
    if geometry is None and not circles and not codes and not provinces:
        # Zone codes are the area (unless they are a whole country, named): a guess from its
        # words comes only when nothing else does.
        # A probe's NWS warning for "Lebanon; Lancaster" (Pennsylvania, SAME and UGC codes)
        # alerted everyone in Lebanon; "Coastal Georgia", "Panama City Beach" do the same.
        guessed = _whole_country(info, zones) if zones else names.find_in_text(description)
        if guessed:
            codes.append(guessed)
            notes.append(f"no geometry: country {guessed} read from the area description")
        elif zones:
            notes.append(ZONES_ONLY_NOTE)
        else:
            raise ItemRejected("the area has no polygon, circle, geocode or known country")
    return Area(
        countries=tuple(dict.fromkeys(codes)),
        subdivisions=tuple(dict.fromkeys(provinces)),
        geometry=geometry,
        circles=tuple(circles),
        zones=tuple(dict.fromkeys(zones)),
        description=description[:MAX_AREA_WORDS],
        notes=tuple(notes),
    )


def _whole_country(info: Element, zones: list[str]) -> str | None:
    """The country a zone-coded area is all of: every <areaDesc> is that country's name and
    every zone code lies in it (MeteoAlarm gives Malta one region, "Malta", EMMA_ID MT001).
    Anything less is no country: "Lebanon" beside a Pennsylvania county's codes named a county."""
    named = {names.code_for_name(text_of(area, "areaDesc")) for area in info.findall("area")}
    zoned = set()
    for zone in zones:
        prefix = _COUNTRY_PREFIXED_ZONE.fullmatch(zone[: zone.find(":") + 3])
        if prefix is None:
            return None
        zoned.add(_NUTS_COUNTRIES.get(prefix[1].upper(), prefix[1].upper()))
    if len(named) == 1 and named == zoned and None not in named:
        return named.pop()
    return None


def _circle(text: str) -> Circle:
    try:
        center, radius = text.split()
        lon, lat = _position(center)
        radius_km = float(radius)
    except ValueError as exc:
        raise ItemRejected(f"unreadable <circle> {text!r}") from exc
    if radius_km == 0:
        radius_km = POINT_RADIUS_KM
    return check_circle(lat, lon, radius_km, field="circle")  # InvalidArea rejects the item
