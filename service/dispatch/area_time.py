"""When an advisory ends, on the clock of the place it covers: a citizen in Bangkok reads
"21:00 (Asia/Bangkok, UTC+07:00)", not "14:00 UTC". An area over several clocks (a whole
country with several zones, a polygon across a border of zones) keeps UTC: one local time
would be wrong for some of the people it warns."""

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import shapely
from shapely.geometry import shape

from service.dispatch.quiet_hours import zone_of_country
from service.geo.clocks import country_zones, zone_at

# Points read along a polygon's outline and a circle's edge: enough to see a second zone in
# an area that crosses into one, few enough that a 5,000-vertex area costs milliseconds.
_OUTLINE_SAMPLES = 32
_CIRCLE_SAMPLES = 8
_KM_PER_DEGREE = 111.32


def area_zone(area: dict, at: datetime) -> str | None:
    """The one zone whose clock holds over the whole area at `at` (None: several clocks
    differ there, or none is known). Where zones of several names keep that one clock (Seoul
    and Tokyo), the first found stands for it: `local_end` then names none."""
    zones = [zone_at(round(lat, 3), round(lon, 3)) for lat, lon in _points(area)]
    for code in [*(area.get("countries") or ()), *_subdivision_countries(area)]:
        # A country of several zones is covered whole: its clocks may differ (a zone the
        # tz database lacks counts as unknown).
        listed = country_zones().get(code, ())
        if len({_offset(zone, at) for zone in listed}) > 1:
            return None
        # One clock under several names (Argentina's): the tz database's first, its main one.
        zones.append(listed[0] if len(listed) > 1 else zone_of_country(code))
    if not zones or None in zones:
        return None
    offsets = {_offset(zone, at) for zone in zones if zone}
    return zones[0] if len(offsets) == 1 and None not in offsets else None


def _one_name(area: dict, at: datetime) -> str | None:
    """The zone's name when the whole area lies in that one zone (not Seoul for Tokyo, nor a
    nautical Etc/GMT-9, whose sign reads backwards)."""
    zone = area_zone(area, at)
    if zone is None or zone.startswith("Etc/"):
        return None
    names = {zone_at(round(lat, 3), round(lon, 3)) for lat, lon in _points(area)}
    for code in [*(area.get("countries") or ()), *_subdivision_countries(area)]:
        listed = country_zones().get(code, ())
        names |= set(listed) if listed else {zone_of_country(code)}
    return zone if names == {zone} else None


def _offset(zone: str, at: datetime) -> object:
    try:
        return ZoneInfo(zone).utcoffset(at)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return None


def local_end(expires: datetime, area: dict, lang: str) -> str:
    """How an alert shows when the advisory ends: local time with its zone and offset when
    the area has one clock, else UTC."""
    zone = area_zone(area, expires)
    try:
        local = expires.astimezone(ZoneInfo(zone)) if zone is not None else None
    except OverflowError:  # past 9999-12-31 there (a feed's "until further notice")
        local = None
    if zone is None or local is None:
        return expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    offset = local.strftime("%z")
    where = ["현지 시각" if lang == "ko" else "local time"]
    where += [name] if (name := _one_name(area, expires)) else []
    where += [f"UTC{offset[:3]}:{offset[3:]}"]
    return f"{local.strftime('%Y-%m-%d %H:%M')} ({', '.join(where)})"


def _points(area: dict) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for circle in area.get("circles") or ():
        lat, lon, radius = float(circle["lat"]), float(circle["lon"]), circle.get("radius_km", 0)
        points.append((lat, lon))
        dlat = float(radius) / _KM_PER_DEGREE
        dlon = dlat / max(math.cos(math.radians(lat)), 0.01)
        for k in range(_CIRCLE_SAMPLES):
            angle = 2 * math.pi * k / _CIRCLE_SAMPLES
            points.append(
                (
                    max(-90.0, min(90.0, lat + dlat * math.sin(angle))),
                    (lon + dlon * math.cos(angle) + 180) % 360 - 180,
                )
            )
    geometry = area.get("geometry")
    if geometry:
        # Each part on its own: a small island of another clock beside a large polygon must
        # not fall between the samples of one stride over both.
        for part in shapely.get_parts(shape(geometry)):
            inside = shapely.point_on_surface(part)
            points.append((inside.y, inside.x))
            outline = shapely.get_coordinates(shapely.boundary(part))
            step = max(1, len(outline) // _OUTLINE_SAMPLES)
            points += [(float(y), float(x)) for x, y in outline[::step]]
    return points


def _subdivision_countries(area: dict) -> list[str]:
    return [code.split("-")[0] for code in area.get("subdivisions") or ()]
