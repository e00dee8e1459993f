"""GeoJSON feeds to advisory drafts: USGS earthquake summaries and NWS (api.weather.gov) alerts.

USGS: a circle around each epicentre whose radius grows with magnitude (USGS_RADIUS_KM), and a
level from the PAGER alert colour (levels.USGS_PAGER). NWS: CAP semantics in JSON; alerts with
`geometry: null` keep their zone codes and match nobody until zone polygons exist."""

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from service.advisories.drafts import (
    CAP_SEVERITIES,
    CAP_URGENCIES,
    AdvisoryDraft,
    ExternalKey,
    ParsedFeed,
    cap_term,
)
from service.advisories.formats import cap_terms, levels
from service.advisories.formats.common import (
    ZONES_ONLY_NOTE,
    ItemRejected,
    ItemSkipped,
    json_text,
    load_json,
    parse_time,
    read_item,
    union_of_rings,
)
from service.advisories.formats.safe_xml import InvalidDocument
from service.geo.areas import Area, check_circle

# (smallest magnitude, radius in km): felt-damage reach, coarse on purpose.
USGS_RADIUS_KM = [(8.0, 600.0), (7.0, 300.0), (6.0, 100.0), (5.0, 50.0), (0.0, 20.0)]
USGS_DAYS_ACTIVE = {"special": 30, "3": 14}  # other levels: 7 days after the event


def parse_geojson(
    data: bytes,
    *,
    level_overrides: Mapping[str, str | None] | None = None,
    max_vertices: int = 50_000,
) -> ParsedFeed:
    document = load_json(data)
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise InvalidDocument("expected a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise InvalidDocument("the FeatureCollection has no features list")
    result = ParsedFeed()
    for i, feature in enumerate(features):
        label = f"feature[{i}]"
        if isinstance(feature, dict) and isinstance(feature.get("id"), str | int):
            label = str(feature["id"])
        read_item(result, label, _feature, feature, level_overrides, max_vertices)
    return result


def usgs_radius_km(magnitude: float) -> float:
    return next(r for floor, r in USGS_RADIUS_KM if magnitude >= floor)


def _feature(
    feature: object, overrides: Mapping[str, str | None] | None, max_vertices: int
) -> AdvisoryDraft:
    if not isinstance(feature, dict):
        raise ItemRejected("a feature is a JSON object")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise ItemRejected("properties is a JSON object")
    if "mag" in props:
        return _usgs(feature, props, overrides)
    if props.get("@type") == "wx:Alert" or "messageType" in props:
        return _nws(feature, props, overrides, max_vertices)
    raise ItemRejected("neither a USGS earthquake nor an NWS alert")


def _usgs(
    feature: dict[str, Any], props: dict[str, Any], overrides: Mapping[str, str | None] | None
) -> AdvisoryDraft:
    coordinates = feature["geometry"]["coordinates"]
    lon, lat = coordinates[:2]
    magnitude = float(props["mag"])
    if not math.isfinite(magnitude):
        raise ItemRejected(f"magnitude {magnitude}")
    colour = json_text(props, "alert") or "none"
    level = levels.level_for(levels.USGS_PAGER, colour, overrides)
    if level is None:
        raise ItemSkipped(f"PAGER {colour}: no advisory")
    try:
        when = datetime.fromtimestamp(props["time"] / 1000, UTC)
    except OSError as exc:  # beyond the platform's time_t
        raise ItemRejected(f"time {props['time']!r} is out of range") from exc
    place = json_text(props, "place") or "unknown place"
    url = json_text(props, "url")
    tsunami = " A tsunami may follow: stay away from the coast." if props.get("tsunami") else ""
    tsunami_ko = " 쓰나미 가능성이 있으니 해안에서 떨어지십시오." if props.get("tsunami") else ""
    depth = coordinates[2] if len(coordinates) > 2 else None
    depth_text = f", depth {float(depth):.0f} km" if depth is not None else ""
    circle = check_circle(lat, lon, usgs_radius_km(magnitude), field="geometry")
    return AdvisoryDraft(
        level=level,
        category="disaster",
        title={
            "en": f"M {magnitude:.1f} earthquake - {place}",
            "ko": f"규모 {magnitude:.1f} 지진 - {place}",
        },
        message={
            "en": f"A magnitude {magnitude:.1f} earthquake struck {place} at "
            f"{when:%Y-%m-%d %H:%M} UTC{depth_text} (USGS PAGER: {colour}).{tsunami} "
            f"Details: {url}",
            "ko": f"{when:%Y-%m-%d %H:%M} UTC {place}에서 규모 {magnitude:.1f} 지진이 "
            f"발생했습니다 (USGS PAGER: {colour}).{tsunami_ko} 자세히: {url}",
        },
        area=Area(circles=(circle,), description=place),
        effective=when,
        expires=when + timedelta(days=USGS_DAYS_ACTIVE.get(level, 7)),
        source="geojson",
        external=ExternalKey("earthquake.usgs.gov", str(feature["id"])),
        label=f"usgs {feature['id']}",
        revisable=True,
    )


def _nws(
    feature: dict[str, Any],
    props: dict[str, Any],
    overrides: Mapping[str, str | None] | None,
    max_vertices: int,
) -> AdvisoryDraft:
    identifier, sender = json_text(props, "id"), json_text(props, "sender")
    if not identifier or not sender:
        raise ItemRejected("an NWS alert needs id and sender")
    msg_type = cap_terms.message_type(
        json_text(props, "messageType"),
        event=json_text(props, "event"),
        headline=json_text(props, "headline"),
        responses=(json_text(props, "response"),),
    )
    identity = {
        "source": "geojson",
        "alerts_citizens": cap_terms.alerts_citizens(json_text(props, "status")),
        "exercise": cap_terms.exercise(json_text(props, "status")),
        "external": ExternalKey(sender, identifier),
        "references": [
            ExternalKey(str(r.get("sender") or sender), str(r["identifier"]))
            for r in props.get("references") or []
            if isinstance(r, dict) and r.get("identifier")
        ],
        "label": f"nws {identifier}",
    }
    if msg_type == "Cancel":
        sent = json_text(props, "sent")
        return cap_terms.cancellation(
            sent=parse_time(sent, field="sent") if sent else None, **identity
        )
    level = cap_terms.level(json_text(props, "severity"), overrides)
    geometry = feature.get("geometry")
    notes: list[str] = []
    polygons = None
    if geometry:
        if not isinstance(geometry, dict):
            raise ItemRejected("geometry is a JSON object or null")
        if geometry.get("type") == "Polygon":
            rings = [geometry["coordinates"][0]]
        elif geometry.get("type") == "MultiPolygon":
            rings = [p[0] for p in geometry["coordinates"]]
        else:
            raise ItemRejected(f"unsupported geometry {geometry.get('type')}")
        polygons = union_of_rings(rings, max_vertices=max_vertices, label="geometry")
    zones = tuple(f"UGC:{z}" for z in _ugc_codes(props))
    if polygons is None:
        if not zones:
            raise ItemRejected("no geometry and no zone codes")
        notes.append(ZONES_ONLY_NOTE)
    title, message = cap_terms.texts(
        headline=json_text(props, "headline"),
        event=json_text(props, "event"),
        description=json_text(props, "description"),
        instruction=json_text(props, "instruction"),
    )
    expires = json_text(props, "expires")
    return AdvisoryDraft(
        level=level,
        category=cap_terms.category(json_text(props, "category")),
        title={"en": title},
        message={"en": message},
        area=Area(
            geometry=polygons,
            zones=zones,
            description=json_text(props, "areaDesc")[:1000],
            notes=tuple(notes),
        ),
        effective=parse_time(props.get("effective") or props["sent"], field="effective"),
        expires=parse_time(expires, field="expires") if expires else None,
        msg_type=msg_type,
        sent=parse_time(json_text(props, "sent"), field="sent")
        if json_text(props, "sent")
        else None,
        severity=cap_term(json_text(props, "severity"), CAP_SEVERITIES),
        urgency=cap_term(json_text(props, "urgency"), CAP_URGENCIES),
        **identity,
    )


def _ugc_codes(props: dict[str, Any]) -> list[str]:
    geocode = props.get("geocode") or {}
    codes = (geocode.get("UGC") or []) if isinstance(geocode, dict) else None
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise ItemRejected("geocode.UGC is a list of zone codes")
    return codes
