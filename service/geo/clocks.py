"""Time zones, offline: the zone at a point (timezonefinder's shipped boundaries, the IANA
names zoneinfo knows) and the clock each country keeps, from the tz database shipped in
`tzdata` (zone.tab). Matching reads a country's clock to know when a traveller's day has
begun, by country because PostGIS has no point-to-zone look-up; quiet hours and an advisory's
local end read the zone at a point."""

import threading
from datetime import datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely
from timezonefinder import TimezoneFinder

from service.geo import countries

# 3 decimals is about 110 m: closer than that, two places share a zone (and a cache entry).
DECIMALS = 3
_lock = threading.Lock()  # the SMS and e-mail lanes look zones up in parallel
# Parts of a country's outline read for their zone: about 100 km² and up (Mayotte is 374).
_SMALLEST_PART_DEG2 = 0.01


@lru_cache(maxsize=4096)
def zone_at(lat: float, lon: float) -> str | None:
    """The zone at a point (at sea, the nautical zone Etc/GMT±n). Cached by the caller's
    rounding: a look-up reads polygon files."""
    with _lock:
        name = _finder().timezone_at(lng=lon, lat=lat)
    return name if name and known_zone(name) else None


@cache
def _finder() -> TimezoneFinder:
    # Polygon files read on demand, not held in memory: 31 MB less per process (measured),
    # and the cache above makes a repeated place free.
    return TimezoneFinder(in_memory=False)


@cache
def known_zone(name: str) -> bool:
    # timezonefinder's data may name a zone this tz database does not have yet: then no
    # quiet hours rather than an error in the dispatcher.
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """zone.tab of the tz database: each country's zones."""
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, _, name = line.split("\t")[:3]
            zones.setdefault(code, []).append(name)
    return {code: tuple(names) for code, names in zones.items()}


def one_clock_offsets(at: datetime) -> dict[str, int]:
    """Seconds east of UTC of every country whose zones all keep one clock at `at`, in the tz
    database and at every sizeable part of its outline (Japan, Korea, Samoa; not the United
    States, Russia or Australia; nor France, whose outline holds Réunion and Martinique, nor
    China, whose Xinjiang the tz database gives a clock of its own)."""
    return _one_clock_offsets(at.replace(minute=0, second=0, microsecond=0))


@lru_cache(maxsize=4)
def _one_clock_offsets(hour: datetime) -> dict[str, int]:
    found: dict[str, int] = {}
    at_parts = _zones_of_parts()
    for code, names in country_zones().items():
        offsets = {_offset(name, hour) for name in (*names, *at_parts.get(code, ()))}
        if len(offsets) == 1 and None not in offsets:
            found[code] = int(next(iter(offsets)).total_seconds())  # type: ignore[union-attr]
    return found


@cache
def _zones_of_parts() -> dict[str, frozenset[str]]:
    """The zone at a point inside each sizeable part of each country's outline: the outlines
    give France's code to Réunion, Mayotte and the Antilles, which zone.tab lists apart."""
    boundaries = countries.boundaries()
    found: dict[str, set[str]] = {}
    for country, geometry in zip(boundaries.countries, boundaries.geometries, strict=True):
        for part in getattr(geometry, "geoms", (geometry,)):
            if part.area < _SMALLEST_PART_DEG2:
                continue
            inside = shapely.point_on_surface(part)
            zone = zone_at(round(inside.y, DECIMALS), round(inside.x, DECIMALS))
            if zone is not None:
                found.setdefault(country.code, set()).add(zone)
    return {code: frozenset(zones) for code, zones in found.items()}


def _offset(name: str, at: datetime) -> timedelta | None:
    try:
        return at.astimezone(ZoneInfo(name)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        return None
