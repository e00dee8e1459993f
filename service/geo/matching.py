"""The matching engine: which places lie in an advisory's area. Pure, vectorised (numpy +
shapely 2 prepared predicates), no database and no web.

Semantics (DESIGN.md §5): the boundary is inside; countries match by code; circles by geodesic
distance on WGS 84 (haversine to narrow down, then an exact geodesic decision near the edge)."""

from dataclasses import dataclass

import numpy as np
import shapely
from geopy.distance import geodesic

from service.geo import subdivisions
from service.geo.areas import Area, Circle

EARTH_RADIUS_KM = 6371.0088
# Haversine differs from the WGS 84 geodesic by under 0.5 %: only points within this band of
# the radius need the exact (slow) decision.
_HAVERSINE_BAND = 0.006


@dataclass(frozen=True)
class Places:
    """Columnar places: lon/lat are NaN for a country-only place; country '' when unknown."""

    lons: np.ndarray
    lats: np.ndarray
    countries: np.ndarray

    @classmethod
    def of(cls, rows: list[tuple[float | None, float | None, str | None]]) -> "Places":
        lons = np.array([np.nan if r[0] is None else r[0] for r in rows], dtype=np.float64)
        lats = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        codes = np.array([r[2] or "" for r in rows], dtype=object)
        return cls(lons, lats, codes)

    def __len__(self) -> int:
        return len(self.lons)


def affected(area: Area, places: Places) -> np.ndarray:
    """Boolean mask: which places the area covers."""
    hit = np.zeros(len(places), dtype=bool)
    if len(places) == 0:
        return hit
    if area.countries:
        hit |= np.isin(places.countries, list(area.countries))
    has_point = ~np.isnan(places.lons)
    if area.geometry is not None:
        hit |= _in_geometry(area.geometry, places, has_point)
    for code in area.subdivisions:
        hit |= _in_geometry(subdivisions.geometry_of(code), places, has_point)
    for circle in area.circles:
        hit |= _in_circle(circle, places, has_point)
    return hit


def _in_geometry(geometry: shapely.Geometry, places: Places, has_point: np.ndarray) -> np.ndarray:
    minx, miny, maxx, maxy = geometry.bounds
    candidates = (
        has_point
        & (places.lons >= minx)
        & (places.lons <= maxx)
        & (places.lats >= miny)
        & (places.lats <= maxy)
    )
    result = np.zeros(len(places), dtype=bool)
    idx = np.flatnonzero(candidates)
    if idx.size:
        shapely.prepare(geometry)
        # intersects_xy counts the boundary as inside, as DESIGN.md asks.
        result[idx] = shapely.intersects_xy(geometry, places.lons[idx], places.lats[idx])
    return result


def haversine_km(lat1: float, lon1: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lats)
    dphi = p2 - p1
    dlmb = np.radians(lons - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _in_circle(circle: Circle, places: Places, has_point: np.ndarray) -> np.ndarray:
    result = np.zeros(len(places), dtype=bool)
    # Latitude prefilter (1° of latitude ≥ 110.5 km); longitude wraps, so it's left to haversine.
    reach_deg = circle.radius_km * (1 + _HAVERSINE_BAND) / 110.5
    idx = np.flatnonzero(has_point & (np.abs(places.lats - circle.lat) <= reach_deg))
    if not idx.size:
        return result
    distance = haversine_km(circle.lat, circle.lon, places.lats[idx], places.lons[idx])
    inside = distance <= circle.radius_km * (1 - _HAVERSINE_BAND)
    near = np.abs(distance - circle.radius_km) <= circle.radius_km * _HAVERSINE_BAND
    for i in np.flatnonzero(near):
        point = (places.lats[idx[i]], places.lons[idx[i]])
        inside[i] = geodesic((circle.lat, circle.lon), point).km <= circle.radius_km
    result[idx] = inside
    return result
