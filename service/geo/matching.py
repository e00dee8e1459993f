"""The matching engine: which citizens' places lie in which advisory areas, at which time.
Pure and vectorised (numpy + shapely 2 prepared predicates); no database, no web.

Semantics (DESIGN.md §5): the boundary is inside; countries match by code (a point's code
includes the 12-nautical-mile sea, geo/waters.py); provinces by their polygon, and a point on
no province also by the nearest province of its country within 12 nautical miles; circles by
geodesic distance on WGS 84 (haversine narrows down, the exact geodesic decides near the
edge); a current location matches while the advisory is active; a stay matches when its dates
overlap the advisory's active window and it has not ended. A stay's dates are its traveller's
own calendar, which runs from UTC-12 to UTC+14: read so that nobody who may still be there is
missed, and begun from midnight on its country's clock (`Today`).

Places are held sorted by longitude, so each polygon part or circle looks only at the slice of
points inside its longitude range (PERFORMANCE.md: the fastest of the measured methods)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import numpy as np
import shapely
from geopy.distance import geodesic
from shapely.geometry import Polygon

from service.geo import clocks, shared_geometry, subdivisions
from service.geo.areas import Area, Circle

EARTH_RADIUS_KM = 6371.0088
# Haversine differs from the WGS 84 geodesic by under 0.5 %: only points within this band of
# the radius need the exact (slow) decision.
_HAVERSINE_BAND = 0.006
_KM_PER_DEG_LAT = 110.5  # the shortest degree of latitude (at the equator)
CURRENT = -1  # starts/ends of a current location: no dates, "now"
FOREVER = 2**31 - 1
_EPOCH = date(1970, 1, 1)


# Where the calendar is earliest (Baker Island) and latest (the Line Islands).
_EARLIEST_OFFSET = timedelta(hours=-12)
_LATEST_OFFSET = timedelta(hours=14)
_INSTANT = timedelta(microseconds=1)


def day_number(day: date) -> int:
    return (day - _EPOCH).days


def earliest_date(moment: datetime) -> date:
    """The calendar date at `moment` where it is earliest on Earth (UTC-12)."""
    return _date_at(moment, _EARLIEST_OFFSET)


def latest_date(moment: datetime) -> date:
    """The calendar date at `moment` where it is latest on Earth (UTC+14)."""
    return _date_at(moment, _LATEST_OFFSET)


def _date_at(moment: datetime, offset: timedelta) -> date:
    # In UTC first: staff may write a time with its own offset (13:30+09:00).
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    except OverflowError:  # year 1 at UTC+14 or 9999 at UTC-12 leaves the calendar in UTC
        return date.min if moment.year == 1 else date.max
    try:
        return (utc + offset).date()
    except OverflowError:  # within half a day of year 1 or 9999
        return date.min if offset < timedelta(0) else date.max


# The sun's clock: 4 minutes a degree of longitude east of Greenwich.
_SOLAR_S_PER_DEGREE = 240.0
_DAY_S = 86_400.0
_MOST_AHEAD_S = 14 * 3600.0  # UTC+14, the Line Islands
_MOST_BEHIND_S = 12 * 3600.0  # UTC-12


@dataclass(frozen=True)
class Today:
    """Which stays are under way now. A stay counts until its last day has ended everywhere:
    someone in Los Angeles on the last evening of their stay, after midnight UTC, is still
    reached (before, they were missed for up to twelve hours; one more alert to someone who
    left this morning is the lesser harm). It has begun, so that its traveller is asked
    whether they are safe, from midnight of its first day on its country's clock (`begun`)."""

    on_from: int  # stays ending on or after this day may be under way somewhere
    now_s: float  # seconds since 1970-01-01 UTC
    # Seconds east of UTC of the countries that keep one clock (geo.clocks), now.
    clocks: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def at(cls, now: datetime) -> "Today":
        seconds = (now - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
        return cls(
            on_from=day_number(earliest_date(now)),
            now_s=seconds,
            clocks=clocks.one_clock_offsets(now),
        )

    def begun(self, starts: np.ndarray, lons: np.ndarray, countries: np.ndarray) -> np.ndarray:
        """Which of these places the traveller is at by now: a current location always; a stay
        from midnight of its first day on its country's clock (Japan's, Belgium's, Samoa's),
        where the country keeps one (geo.clocks). In one that keeps several (the United
        States, Russia, Australia; France, with Réunion) or none known: by the sun's clock at
        its longitude east of Greenwich (4 minutes a degree: within about an hour of the legal
        one there), from midnight UTC west of it (asking a day's first hours early harms less
        than not asking). Before, the UTC date had travellers who had landed in Asia unasked
        for up to half a day. Countries, not points, so that PostGIS decides the same way
        (geomatch.postgis._AHEAD)."""
        starts_s = np.asarray(starts, dtype=np.float64) * _DAY_S
        east = np.clip(np.nan_to_num(np.asarray(lons, dtype=np.float64)), 0.0, None)
        offset_s = east * _SOLAR_S_PER_DEGREE
        # Only a stay whose first midnight lies between UTC+14's and UTC-12's can go either
        # way: its country's clock is read for those alone.
        unsure = np.flatnonzero(
            (starts_s - _MOST_AHEAD_S <= self.now_s) & (starts_s + _MOST_BEHIND_S > self.now_s)
        )
        if unsure.size and self.clocks:
            codes = np.asarray(countries, dtype=object)[unsure]
            kept = np.fromiter(
                (self.clocks.get(code, np.nan) for code in codes), np.float64, count=len(codes)
            )
            offset_s[unsure] = np.where(np.isnan(kept), offset_s[unsure], kept)
        return starts_s - offset_s <= self.now_s

    @property
    def first_date_on(self) -> date:
        """The earliest last day of a stay that may be under way: what loaders fetch from."""
        return day_of(self.on_from)


def day_of(number: int) -> date:
    return _EPOCH + timedelta(days=number)


@dataclass(frozen=True)
class PlaceSet:
    """Columnar places, sorted by longitude; rows without a point (country-only) come last."""

    citizen_ids: np.ndarray  # int64
    lons: np.ndarray  # float64, ascending, NaN at the end
    lats: np.ndarray
    countries: np.ndarray  # object array of ISO codes, "" when unknown
    country_ids: np.ndarray  # int16 index into country_table: fast equality tests
    country_table: dict[str, int]
    starts: np.ndarray  # int32 day numbers; CURRENT for a current location
    ends: np.ndarray
    n_points: int

    @classmethod
    def build(
        cls,
        citizen_ids: Sequence[int] | np.ndarray,
        lons: Sequence[float | None] | np.ndarray,
        lats: Sequence[float | None] | np.ndarray,
        countries: Sequence[str | None] | np.ndarray,
        starts: Sequence[int] | np.ndarray,
        ends: Sequence[int] | np.ndarray,
    ) -> "PlaceSet":
        lon = np.asarray(lons, dtype=np.float64)
        order = np.argsort(lon, kind="stable")  # NaN sorts last
        lon = lon[order]
        codes = np.asarray(countries, dtype=object)[order]
        codes[codes == None] = ""  # noqa: E711 - elementwise comparison
        table: dict[str, int] = {}
        country_ids = np.fromiter(
            (table.setdefault(code, len(table)) for code in codes.tolist()),
            dtype=np.int16,
            count=len(codes),
        )
        return cls(
            citizen_ids=np.asarray(citizen_ids, dtype=np.int64)[order],
            lons=lon,
            lats=np.asarray(lats, dtype=np.float64)[order],
            countries=codes,
            country_ids=country_ids,
            country_table=table,
            starts=np.asarray(starts, dtype=np.int32)[order],
            ends=np.asarray(ends, dtype=np.int32)[order],
            n_points=int(np.count_nonzero(~np.isnan(lon))),
        )

    def __len__(self) -> int:
        return len(self.citizen_ids)


@dataclass(frozen=True)
class Target:
    """An advisory to match: its area and active window (inclusive day numbers: every
    calendar date somewhere on Earth while it is in effect)."""

    key: int
    area: Area
    start_day: int
    end_day: int  # FOREVER when it has no end
    active_now: bool  # effective already and not expired: current locations match

    @classmethod
    def for_window(
        cls, key: int, area: Area, *, effective: datetime, expires: datetime | None, now: datetime
    ) -> "Target":
        return cls(
            key=key,
            area=area,
            start_day=day_number(earliest_date(effective)),
            # The end is exclusive: at 10:00 UTC sharp the next day has begun nowhere yet.
            end_day=day_number(latest_date(expires - _INSTANT)) if expires else FOREVER,
            active_now=effective <= now and (expires is None or expires > now),
        )


def match(target: Target, places: PlaceSet, *, today: Today) -> np.ndarray:
    """Sorted unique citizen ids whose places the target reaches."""
    return sorted_unique(places.citizen_ids[matched_places(target, places, today=today)])


def match_with_ahead(
    target: Target, places: PlaceSet, *, today: Today
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique citizen ids the target reaches, and those of them it reaches only ahead of
    time: by stays not begun, or before it is in effect (told, not yet there)."""
    idx = matched_places(target, places, today=today)
    ids = sorted_unique(places.citizen_ids[idx])
    if target.active_now:
        there = idx[today.begun(places.starts[idx], places.lons[idx], places.countries[idx])]
    else:
        there = idx[:0]
    # CURRENT (-1) is below every day: a current location is there whenever the target is on.
    return ids, np.setdiff1d(ids, places.citizen_ids[there], assume_unique=False)


def matched_places(target: Target, places: PlaceSet, *, today: Today) -> np.ndarray:
    """Indices of the places the target reaches: inside its area and, for a stay, in time."""
    idx = place_hits(target.area, places)
    if idx.size == 0:
        return idx.astype(np.int64)
    starts, ends = places.starts[idx], places.ends[idx]
    current = starts == CURRENT
    stay_ok = ~current & (ends >= max(target.start_day, today.on_from)) & (starts <= target.end_day)
    ok = stay_ok | (current & target.active_now)
    return idx[ok]


def place_hits(area: Area, places: PlaceSet) -> np.ndarray:
    """Sorted unique indices of the places inside the area (ignoring time)."""
    found: list[np.ndarray] = []
    wanted = [places.country_table[c] for c in area.countries if c in places.country_table]
    if wanted:
        found.append(np.flatnonzero(np.isin(places.country_ids, wanted)))
    for part in polygon_parts(area):
        found.append(_in_polygon(part, places))
    for code in area.subdivisions:
        found.append(_in_waters_of(code, places))
    for circle in area.circles:
        found.append(_in_circle(circle, places))
    only = [places.country_table[c] for c in area.country_only if c in places.country_table]
    if only:
        # Citizens known only by their country (rows without a point come last).
        unplaced = places.country_ids[places.n_points :]
        found.append(places.n_points + np.flatnonzero(np.isin(unplaced, only)))
    if not found:
        return np.empty(0, dtype=np.int64)
    return _union(found)


def reaches_a_place(
    target: Target, places: Sequence[tuple[float, float, str, int, int]], *, today: Today
) -> bool:
    """Whether the target reaches one of these places (lon, lat, country, first day, last day;
    CURRENT for a current location) as matching does: in its area, and in its window."""
    return matched_places(target, _few(places), today=today).size > 0


def _few(places: Sequence[tuple]) -> PlaceSet:
    lons, lats, countries, starts, ends = zip(*places, strict=True)
    return PlaceSet.build(np.zeros(len(places)), lons, lats, countries, starts, ends)


def _union(found: list[np.ndarray]) -> np.ndarray:
    """Sorted unique union of arrays of indices, each already sorted and unique."""
    return found[0] if len(found) == 1 else sorted_unique(np.concatenate(found))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's hash-based unique took 30 % of a steady sweep."""
    if values.size < 2:
        return values
    values = np.sort(values)
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def polygon_parts(area: Area) -> list[Polygon]:
    parts: list[Polygon] = []
    if area.geometry is not None:
        parts.extend(area.geometry.geoms)
    for code in area.subdivisions:
        parts.extend(subdivisions.geometry_of(code).geoms)
    return parts


def _in_waters_of(code: str, places: PlaceSet) -> np.ndarray:
    """Places on no province that the province owns by the territorial-sea rule, their stored
    country deciding which provinces are theirs (those it covers are its polygon's)."""
    found = []
    for west, south, east, north in subdivisions.reach_boxes(code):
        lo, hi = _lon_slice(places, west, east)
        lats = places.lats[lo:hi]
        found.append(lo + np.flatnonzero((lats >= south) & (lats <= north)))
    idx = _union(found)
    if idx.size:
        idx = idx[
            ~shared_geometry.intersects_xy(
                subdivisions.land_near(code), places.lons[idx], places.lats[idx]
            )
        ]
    if idx.size == 0:
        return idx
    index = subdivisions.index()
    ranks = index.sea_ranks_at(places.lons[idx], places.lats[idx], places.countries[idx].tolist())
    return idx[ranks == index.rank[code]]


def _lon_slice(places: PlaceSet, west: float, east: float) -> tuple[int, int]:
    lons = places.lons[: places.n_points]
    return (
        int(np.searchsorted(lons, west, side="left")),
        int(np.searchsorted(lons, east, side="right")),
    )


def _in_polygon(part: Polygon, places: PlaceSet) -> np.ndarray:
    minx, miny, maxx, maxy = part.bounds
    lo, hi = _lon_slice(places, minx, maxx)
    lats = places.lats[lo:hi]
    idx = lo + np.flatnonzero((lats >= miny) & (lats <= maxy))
    if idx.size == 0:
        return idx
    shapely.prepare(part)
    # intersects_xy counts the boundary as inside, as DESIGN.md asks.
    return idx[shapely.intersects_xy(part, places.lons[idx], places.lats[idx])]


def haversine_km(lat1: float, lon1: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lats)
    a = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lons - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def circle_lon_ranges(circle: Circle, reach_deg: float) -> list[tuple[float, float]]:
    top = abs(circle.lat) + reach_deg
    if top >= 89.0:
        return [(-180.0, 180.0)]  # the circle reaches a pole: every longitude
    dlon = min(180.0, reach_deg / np.cos(np.radians(top)))
    west, east = circle.lon - dlon, circle.lon + dlon
    if dlon >= 180.0:
        return [(-180.0, 180.0)]
    ranges = [(max(west, -180.0), min(east, 180.0))]
    if west < -180.0:  # wraps across the antimeridian
        ranges.append((west + 360.0, 180.0))
    if east > 180.0:
        ranges.append((-180.0, east - 360.0))
    return ranges


def circle_reach_deg(circle: Circle) -> float:
    """Degrees of latitude the circle can reach (with the haversine margin)."""
    return circle.radius_km * (1 + _HAVERSINE_BAND) / _KM_PER_DEG_LAT


def _in_circle(circle: Circle, places: PlaceSet) -> np.ndarray:
    reach_deg = circle_reach_deg(circle)
    found = []
    for west, east in circle_lon_ranges(circle, reach_deg):
        lo, hi = _lon_slice(places, west, east)
        lats = places.lats[lo:hi]
        found.append(lo + np.flatnonzero(np.abs(lats - circle.lat) <= reach_deg))
    idx = _union(found)
    if idx.size == 0:
        return idx
    distance = haversine_km(circle.lat, circle.lon, places.lats[idx], places.lons[idx])
    inside = distance <= circle.radius_km * (1 - _HAVERSINE_BAND)
    near = np.flatnonzero(np.abs(distance - circle.radius_km) <= circle.radius_km * _HAVERSINE_BAND)
    for i in near:
        inside[i] = _geodesic_within(
            circle.lat,
            circle.lon,
            float(places.lats[idx[i]]),
            float(places.lons[idx[i]]),
            circle.radius_km,
        )
    return idx[inside]


@lru_cache(maxsize=1 << 16)  # a steady sweep of the benchmark asks about 5,800
def _geodesic_within(lat: float, lon: float, p_lat: float, p_lon: float, radius_km: float) -> bool:
    """The exact decision for a point near a circle's edge (0.2 ms each in geographiclib):
    remembered, since every sweep asks again about the same places near the same circles."""
    return geodesic((lat, lon), (p_lat, p_lon)).km <= radius_km
