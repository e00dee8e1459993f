"""GeoJSON feeds to advisory drafts: USGS earthquake summaries and NWS (api.weather.gov) alerts.

USGS: a circle around each epicentre whose radius grows with magnitude (USGS_RADIUS_KM), and a
level from the PAGER alert colour (levels.USGS_PAGER). NWS: CAP semantics in JSON; alerts with
`geometry: null` keep their zone codes and match nobody until zone polygons exist."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from service.advisories.drafts import AdvisoryDraft, ExternalKey, ParsedFeed, Rejected
from service.advisories.formats import levels
from service.advisories.formats.common import (
    ZONES_ONLY_NOTE,
    ItemRejected,
    ItemSkipped,
    load_json,
    parse_time,
    plain_text,
    union_of_rings,
)
from service.advisories.formats.safe_xml import InvalidDocument
from service.geo.areas import Area, check_circle

# (smallest magnitude, radius in km): felt-damage reach, coarse on purpose.
USGS_RADIUS_KM = [(8.0, 600.0), (7.0, 300.0), (6.0, 100.0), (5.0, 50.0), (0.0, 20.0)]
USGS_DAYS_ACTIVE = {"special": 30, "3": 14}  # other levels: 7 days after the event
_CAP_CATEGORIES = {
    "Geo": "disaster",
    "Met": "disaster",
    "Fire": "disaster",
    "Env": "disaster",
    "Health": "health",
    "Security": "security",
    "Safety": "security",
}


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
        label = (
            str(feature.get("id") or f"feature[{i}]")
            if isinstance(feature, dict)
            else f"feature[{i}]"
        )
        try:
            props = feature.get("properties") or {}
            if "mag" in props:
                result.drafts.append(_usgs(feature, props, level_overrides))
            elif props.get("@type") == "wx:Alert" or "messageType" in props:
                result.drafts.append(_nws(feature, props, level_overrides, max_vertices))
            else:
                raise ItemRejected("neither a USGS earthquake nor an NWS alert")
        except ItemSkipped as exc:
            result.skipped.append(Rejected(label, str(exc)))
        except ItemRejected as exc:
            result.rejected.append(Rejected(label, str(exc)))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            result.rejected.append(Rejected(label, f"malformed feature: {exc!r}"))
    return result


def usgs_radius_km(magnitude: float) -> float:
    return next(r for floor, r in USGS_RADIUS_KM if magnitude >= floor)


def _usgs(
    feature: dict[str, Any], props: dict[str, Any], overrides: Mapping[str, str | None] | None
) -> AdvisoryDraft:
    lon, lat = feature["geometry"]["coordinates"][:2]
    magnitude = float(props["mag"])
    colour = props.get("alert") or "none"
    level = levels.level_for(levels.USGS_PAGER, colour, overrides)
    if level is None:
        raise ItemSkipped(f"PAGER {colour}: no advisory")
    when = datetime.fromtimestamp(props["time"] / 1000, UTC)
    place = props.get("place") or "unknown place"
    tsunami = " A tsunami may follow: stay away from the coast." if props.get("tsunami") else ""
    tsunami_ko = " 쓰나미 가능성이 있으니 해안에서 떨어지십시오." if props.get("tsunami") else ""
    depth = (
        feature["geometry"]["coordinates"][2]
        if len(feature["geometry"]["coordinates"]) > 2
        else None
    )
    depth_text = f", depth {depth:.0f} km" if depth is not None else ""
    try:
        circle = check_circle(lat, lon, usgs_radius_km(magnitude), field="geometry")
    except Exception as exc:
        raise ItemRejected(str(getattr(exc, "detail", exc))) from exc
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
            f"Details: {props.get('url', '')}",
            "ko": f"{when:%Y-%m-%d %H:%M} UTC {place}에서 규모 {magnitude:.1f} 지진이 "
            f"발생했습니다 (USGS PAGER: {colour}).{tsunami_ko} 자세히: {props.get('url', '')}",
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
    identifier, sender = props.get("id"), props.get("sender")
    if not identifier or not sender:
        raise ItemRejected("an NWS alert needs id and sender")
    severity = props.get("severity") or "Unknown"
    level = levels.level_for(levels.CAP_SEVERITY, severity, overrides)
    if level is None:
        raise ItemSkipped(f"severity {severity}: no advisory")
    geometry = feature.get("geometry")
    notes: list[str] = []
    polygons = None
    if geometry:
        if geometry.get("type") == "Polygon":
            rings = [geometry["coordinates"][0]]
        elif geometry.get("type") == "MultiPolygon":
            rings = [p[0] for p in geometry["coordinates"]]
        else:
            raise ItemRejected(f"unsupported geometry {geometry.get('type')}")
        polygons = union_of_rings(rings, max_vertices=max_vertices, label="geometry")
    zones = tuple(f"UGC:{z}" for z in (props.get("geocode") or {}).get("UGC", []))
    if polygons is None:
        if not zones:
            raise ItemRejected("no geometry and no zone codes")
        notes.append(ZONES_ONLY_NOTE)
    msg_type = props.get("messageType") or "Alert"
    title = plain_text(props.get("headline") or props.get("event") or "NWS alert", 300)
    body = "\n\n".join(p for p in (props.get("description"), props.get("instruction")) if p)
    return AdvisoryDraft(
        level=level,
        category=_CAP_CATEGORIES.get(props.get("category", ""), "other"),
        title={"en": title},
        message={"en": plain_text(body or title)},
        area=Area(
            geometry=polygons,
            zones=zones,
            description=props.get("areaDesc", "")[:1000],
            notes=tuple(notes),
        ),
        effective=parse_time(props.get("effective") or props["sent"], field="effective"),
        expires=parse_time(props["expires"], field="expires") if props.get("expires") else None,
        source="geojson",
        alerts_citizens=props.get("status") == "Actual",
        external=ExternalKey(sender, identifier),
        msg_type="Cancel" if msg_type == "Cancel" else msg_type,
        references=[
            ExternalKey(r.get("sender", sender), r["identifier"])
            for r in props.get("references") or []
            if isinstance(r, dict) and r.get("identifier")
        ],
        label=f"nws {identifier}",
    )
