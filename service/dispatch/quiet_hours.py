"""Quiet hours: level 1-2 alerts wait while it is night where the citizen is. The time zone is
found offline (timezonefinder's shipped boundaries, the IANA names zoneinfo knows); the window
is read on the local wall clock, so it follows daylight saving time."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import shapely

from service.geo import countries
from service.geo.clocks import DECIMALS, country_zones, known_zone, zone_at


@dataclass(frozen=True)
class Place:
    """Where the citizen is now: a point (with its country, if any) or a country alone."""

    lat: float | None
    lon: float | None
    country: str | None


@dataclass(frozen=True)
class Quiet:
    """Inside the citizen's quiet hours: they end at `until` (UTC), read in `zone`."""

    until: datetime
    zone: str
    local_end: str  # "07:00"


def parse_hhmm(text: str) -> time:
    """ "07:00" as a time; ValueError unless it is HH:MM between 00:00 and 23:59."""
    hours, sep, minutes = text.partition(":")
    if not (
        sep and len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit()
    ):
        raise ValueError("must be HH:MM, from 00:00 to 23:59")
    return time(int(hours), int(minutes))  # ValueError past 23:59


def zone_of(place: Place) -> str | None:
    """The IANA zone of a place; None when neither its point nor its country gives one."""
    if place.lat is not None and place.lon is not None:
        found = zone_at(round(place.lat, DECIMALS), round(place.lon, DECIMALS))
        if found is not None:
            return found
    return zone_of_country(place.country) if place.country else None


@cache
def zone_of_country(code: str) -> str | None:
    """The zone of a country known only by its code: its one zone when the tz database lists
    one, else the zone at a representative point of its largest polygon (the US: Chicago)."""
    zones = country_zones().get(code, ())
    if len(zones) == 1:
        return zones[0] if known_zone(zones[0]) else None
    geometries = [
        g
        for c, g in zip(
            countries.boundaries().countries, countries.boundaries().geometries, strict=True
        )
        if c.code == code
    ]
    if not geometries:
        return None
    point = shapely.point_on_surface(max(geometries, key=lambda g: g.area))
    return zone_at(round(point.y, DECIMALS), round(point.x, DECIMALS))


def quiet_until(now: datetime, *, start: str | None, end: str | None, zone: str) -> Quiet | None:
    """Whether `now` falls in [start, end) on the local clock of `zone` (a window may cross
    midnight; start == end, or none, is no quiet hours), and if so when it ends."""
    if not start or not end or start == end:
        return None
    begins, ends = parse_hhmm(start), parse_hhmm(end)
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    wall = local.time().replace(tzinfo=None)
    today = local.date()
    if begins < ends:
        inside, end_day = begins <= wall < ends, today
    elif wall >= begins:
        inside, end_day = True, today + timedelta(days=1)
    else:
        inside, end_day = wall < ends, today
    if not inside:
        return None
    until = _first_reading(end_day, ends, tz, after=now)
    return Quiet(until=until, zone=zone, local_end=end) if until > now else None


def _first_reading(day: date, at: time, tz: ZoneInfo, *, after: datetime) -> datetime:
    """The first instant after `after` at which the clock of `tz` reads `at` on `day`, or
    has passed it. A reading that occurs twice (clocks go back) ends at the first that is
    still ahead; one that never occurs (clocks go forward over it) ends when the clocks jump."""
    wall = datetime.combine(day, at, tzinfo=tz)
    earlier_offset = wall.replace(fold=0).astimezone(UTC)
    later_offset = wall.replace(fold=1).astimezone(UTC)
    if earlier_offset <= later_offset:  # one reading, or two (the first still ahead wins)
        return earlier_offset if earlier_offset > after else later_offset
    # A gap: `later_offset` lies before the jump and `earlier_offset` after it. Find the jump
    # to the second (zoneinfo does not expose its transitions).
    lo, hi = later_offset, earlier_offset
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)
