"""Territorial waters: a point on no polygon belongs to the owner of the nearest polygon within
12 nautical miles (22.224 km, the breadth of the territorial sea in UNCLOS art. 3), measured as
the geodesic on WGS 84. Shipped coastlines are coarse (Kuta beach on Bali lies 1.5 km "at sea"
in Natural Earth), so without this rule a citizen on the beach had no country.

Vectorised: an STRtree of short pieces of every polygon's boundary finds the coasts near each
point, and a local azimuthal projection (spherical, scaled by the ellipsoid's radii of curvature
at the point: under 1 m off at 30 km) measures all of them at once. Only a point whose answer
lies within _TOLERANCE_KM of the limit or of a tie is decided by the exact geodesic."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
import shapely.affinity
from geographiclib.geodesic import Geodesic

from service.geo import shared_geometry

TERRITORIAL_SEA_KM = 22.224  # 12 international nautical miles of 1,852 m
NOBODY = -1  # owner of land that belongs to no code (Bir Tawil), and of points at sea
UNCOVERED = np.iinfo(np.int64).max  # covering(): on no polygon
_NOBODYS_LAND = UNCOVERED - 1

_A, _F = 6378.137, 1 / 298.257223563  # WGS 84, km
_E2 = _F * (2 - _F)
# Along a geodesic of 22.224 km the latitude moves at most 22.224 / 110.574 (the shortest
# degree of latitude) and the longitude at most 22.224 / (111.3195 cos φ) at the highest φ
# reached; 1 % more, so the search boxes always hold the coasts in reach.
REACH_LAT_DEG = TERRITORIAL_SEA_KM / 110.574 * 1.01
_KM_PER_DEG_LON = 111.3195
SEGMENT_DEG = 0.05  # longer edges are split: the projected chord then stays within 1 m of them
_PIECE = 32  # boundary segments per STRtree entry
# The projection errs by under 1 m at 30 km (tested); an edge's chord adds at most ~1 m.
_TOLERANCE_KM = 0.010
TIE_KM = 1e-5  # distances within a centimetre are a tie: two computations of one corner differ
_CHUNK = 20_000  # points measured at once: bounds the (point, segment) arrays to ~100 MB

Box = tuple[float, float, float, float]  # west, south, east, north


def reach_lon_deg(lat: np.ndarray | float) -> np.ndarray:
    """Degrees of longitude a point at `lat` can reach within the territorial sea."""
    top = np.minimum(np.abs(lat) + REACH_LAT_DEG, 90.0)
    cos = np.cos(np.radians(top))
    with np.errstate(divide="ignore"):
        return np.where(cos > 1e-3, TERRITORIAL_SEA_KM * 1.01 / (_KM_PER_DEG_LON * cos), 360.0)


def reach_boxes(west: float, south: float, east: float, north: float) -> list[Box]:
    """The box grown by the territorial sea, as boxes inside [-180, 180] (wrapped across ±180)."""
    dlon = float(reach_lon_deg(max(abs(south), abs(north))))
    south, north = max(south - REACH_LAT_DEG, -90.0), min(north + REACH_LAT_DEG, 90.0)
    west, east = west - dlon, east + dlon
    if east - west >= 360.0:
        return [(-180.0, south, 180.0, north)]
    boxes = [(max(west, -180.0), south, min(east, 180.0), north)]
    if west < -180.0:
        boxes.append((west + 360.0, south, 180.0, north))
    if east > 180.0:
        boxes.append((-180.0, south, east - 360.0, north))
    return boxes


def reach_of(geometry: shapely.Geometry, *, max_boxes: int = 64) -> list[Box]:
    """Boxes that hold every point within the territorial sea of a (multi)polygon; a shape of
    many parts is boxed by sides of the antimeridian, so that the list stays short."""
    bounds = shapely.bounds(shapely.get_parts(geometry))
    if len(bounds) > max_boxes:
        west_side = bounds[:, 2] <= 0
        sides = [bounds[side] for side in (west_side, ~west_side) if side.any()]
        bounds = np.array(
            [(b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()) for b in sides]
        )
    return [box for b in bounds.tolist() for box in reach_boxes(*b)]


def local_xy(
    lat0: np.ndarray, lon0: np.ndarray, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Kilometres east and north of (lat0, lon0): the spherical azimuthal equidistant projection
    scaled by the ellipsoid's radii of curvature there (prime vertical east, meridian north)."""
    p0, p, dl = np.radians(lat0), np.radians(lat), np.radians(lon - lon0)
    s0, c0, sp, cp = np.sin(p0), np.cos(p0), np.sin(p), np.cos(p)
    east = cp * np.sin(dl)  # sin σ sin α
    north = c0 * sp - s0 * cp * np.cos(dl)  # sin σ cos α
    sin_sigma = np.hypot(east, north)
    sigma = np.arctan2(sin_sigma, s0 * sp + c0 * cp * np.cos(dl))
    scale = np.divide(sigma, sin_sigma, out=np.ones_like(sigma), where=sin_sigma > 0)
    w = 1 - _E2 * s0**2
    return _A / np.sqrt(w) * scale * east, _A * (1 - _E2) / w**1.5 * scale * north


@dataclass(frozen=True, eq=False)
class Waters:
    """The boundaries of owned polygons, as segments, for "which owner's waters is this in"."""

    x0: np.ndarray  # segment starts and ends, lon/lat degrees
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    owners: np.ndarray  # int32 owner of each segment
    piece_start: np.ndarray  # segments [start, stop) of each STRtree entry
    piece_stop: np.ndarray
    tree: shapely.STRtree
    _exact: dict = field(default_factory=dict)  # exact decisions already made, by point

    @classmethod
    def of(cls, geometries: Sequence, owners: Sequence[int]) -> "Waters":
        """Waters around these (multi)polygons; owners[i] owns geometries[i]."""
        parts, of_geom = shapely.get_parts(np.asarray(geometries, dtype=object), return_index=True)
        rings, of_part = shapely.get_rings(parts, return_index=True)
        rings = shapely.segmentize(rings, SEGMENT_DEG)
        coords, of_ring = shapely.get_coordinates(rings, return_index=True)
        same_ring = of_ring[1:] == of_ring[:-1]
        ring_of_segment = of_ring[:-1][same_ring]
        start = np.flatnonzero(np.r_[True, ring_of_segment[1:] != ring_of_segment[:-1]])
        position = np.arange(ring_of_segment.size) - np.repeat(
            start, np.diff(np.r_[start, ring_of_segment.size])
        )
        piece_start = np.flatnonzero(position % _PIECE == 0)
        piece_stop = np.r_[piece_start[1:], ring_of_segment.size]
        x0, y0 = coords[:-1][same_ring].T
        x1, y1 = coords[1:][same_ring].T
        owner_of = np.asarray(owners, dtype=np.int32)[of_geom[of_part[ring_of_segment]]]
        boxes = shapely.box(
            np.minimum.reduceat(np.minimum(x0, x1), piece_start),
            np.minimum.reduceat(np.minimum(y0, y1), piece_start),
            np.maximum.reduceat(np.maximum(x0, x1), piece_start),
            np.maximum.reduceat(np.maximum(y0, y1), piece_start),
        )
        return cls(
            np.ascontiguousarray(x0),
            np.ascontiguousarray(y0),
            np.ascontiguousarray(x1),
            np.ascontiguousarray(y1),
            owner_of,
            piece_start,
            piece_stop,
            shapely.STRtree(boxes),
        )

    def owners_near(self, shape: shapely.Geometry) -> set[int]:
        """Owners whose coast lies within the territorial sea of the shape (by the boxes of
        coast pieces: a few more than exactly, never fewer)."""
        if shape.is_empty:
            return set()
        # In a frame where a degree of longitude is as long as one of latitude (at the shape's
        # centroid), the pieces whose box lies within the sea's width. The tree first narrows
        # them by a distance wide enough at the shape's most poleward latitude. (Buffering a
        # 5,000-vertex ring instead took over a second; this takes milliseconds.)
        width = TERRITORIAL_SEA_KM / 111.32
        _, south, _, north = shape.bounds
        widest = max(math.cos(math.radians(min(max(abs(south), abs(north)), 84.0))), 0.1)
        pieces = self.tree.query(shape, predicate="dwithin", distance=width / widest)
        if pieces.size == 0:
            return set()
        squeeze = max(math.cos(math.radians(min(abs(shape.centroid.y), 84.0))), 0.1)
        local = shapely.affinity.scale(shape, xfact=squeeze, yfact=1.0, origin=(0, 0))
        boxes = shapely.transform(self.tree.geometries.take(pieces), lambda xy: xy * (squeeze, 1))
        pieces = pieces[shapely.distance(local, boxes) <= width]
        return set(np.unique(self.owners[self.piece_start[pieces]]).tolist())

    def nearest(
        self,
        lons: np.ndarray,
        lats: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        owner_groups: np.ndarray | None = None,
    ) -> np.ndarray:
        """For points on no polygon: the owner of the nearest boundary within the territorial
        sea (the lower owner on a tie), else NOBODY. With groups, a point may only go to an
        owner of its own group (owner_groups[owner] == groups[point]; -1 matches none)."""
        lons, lats = np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
        result = np.full(lons.size, NOBODY, dtype=np.int32)
        for lo in range(0, lons.size, _CHUNK):
            hi = min(lo + _CHUNK, lons.size)
            point, segment = self._segments_near(lons[lo:hi], lats[lo:hi])
            if groups is not None and owner_groups is not None:
                mine = owner_groups[self.owners[segment]] == groups[lo:hi][point]
                point, segment = point[mine], segment[mine]
            result[lo:hi] = self._nearest(lons[lo:hi], lats[lo:hi], point, segment)
        return result

    def _nearest(
        self, lons: np.ndarray, lats: np.ndarray, point: np.ndarray, segment: np.ndarray
    ) -> np.ndarray:
        result = np.full(lons.size, NOBODY, dtype=np.int32)
        if point.size == 0:
            return result
        km = self._approx_km(lons[point], lats[point], segment)
        owner = self.owners[segment]
        # Per point (rows first[i]…): the nearest owner, then the nearest of any other owner.
        order = np.lexsort((owner, km, point))
        point, km, owner, segment = point[order], km[order], owner[order], segment[order]
        first = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])
        counts = np.diff(np.r_[first, point.size])
        best_km, best_owner = km[first], owner[first]
        others = np.where(owner != np.repeat(best_owner, counts), km, np.inf)
        runner_up_km = np.minimum.reduceat(others, first)
        sure_in = (best_km <= TERRITORIAL_SEA_KM - _TOLERANCE_KM) & (
            runner_up_km - best_km > 2 * _TOLERANCE_KM
        )
        result[point[first[sure_in]]] = best_owner[sure_in]
        unsure = ~sure_in & (best_km <= TERRITORIAL_SEA_KM + _TOLERANCE_KM)
        for i in np.flatnonzero(unsure):
            rows = slice(first[i], first[i] + counts[i])
            close = segment[rows][km[rows] <= best_km[i] + 2 * _TOLERANCE_KM]
            p = point[first[i]]
            result[p] = self._exact_owner(float(lons[p]), float(lats[p]), close)
        return result

    def _segments_near(self, lons: np.ndarray, lats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point, segment) pairs of every segment whose piece lies in the point's reach box."""
        dlon = reach_lon_deg(lats)
        south, north = lats - REACH_LAT_DEG, lats + REACH_LAT_DEG
        west, east = lons - dlon, lons + dlon
        full = dlon >= 180.0
        of_box = [np.arange(lons.size)]
        boxes = [
            shapely.box(
                np.where(full, -180.0, np.maximum(west, -180.0)),
                south,
                np.where(full, 180.0, np.minimum(east, 180.0)),
                north,
            )
        ]
        for wraps, w, e in (
            (~full & (west < -180.0), west + 360.0, np.full(lons.size, 180.0)),
            (~full & (east > 180.0), np.full(lons.size, -180.0), east - 360.0),
        ):
            of_box.append(np.flatnonzero(wraps))
            boxes.append(shapely.box(w[wraps], south[wraps], e[wraps], north[wraps]))
        box_idx, piece = self.tree.query(np.concatenate(boxes), predicate="intersects")
        point = np.concatenate(of_box)[box_idx]
        counts = self.piece_stop[piece] - self.piece_start[piece]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(point, counts), np.repeat(self.piece_start[piece], counts) + offsets

    def _approx_km(self, lons: np.ndarray, lats: np.ndarray, segment: np.ndarray) -> np.ndarray:
        """Distance from each point to its segment, in the point's local projection."""
        ax, ay = local_xy(lats, lons, self.y0[segment], self.x0[segment])
        bx, by = local_xy(lats, lons, self.y1[segment], self.x1[segment])
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = np.divide(-(ax * dx + ay * dy), length2, out=np.zeros_like(dx), where=length2 > 0)
        t = np.clip(t, 0.0, 1.0)
        return np.hypot(ax + t * dx, ay + t * dy)

    def _exact_owner(self, lon: float, lat: float, segments: np.ndarray) -> int:
        """The decision by exact geodesics, for a point near the limit or near a tie;
        remembered, since a sweep asks again about the same places."""
        owners = self.owners[segments]
        key = (lon, lat, *np.unique(owners).tolist())  # the owners it may go to
        if key not in self._exact:
            if len(self._exact) >= 1 << 16:
                self._exact.clear()
            best: dict[int, float] = {}
            for s, owner in zip(segments.tolist(), owners.tolist(), strict=True):
                km = _segment_km(lat, lon, self.y0[s], self.x0[s], self.y1[s], self.x1[s])
                best[owner] = min(km, best.get(owner, np.inf))
            nearest_km = min(best.values())
            # Two provinces meeting at the coast are equally near a point nearest that corner:
            # within a centimetre it is a tie (PostGIS agrees), and the lower owner wins.
            owner = min(o for o, km in best.items() if km <= nearest_km + TIE_KM)
            self._exact[key] = owner if nearest_km <= TERRITORIAL_SEA_KM else NOBODY
        return self._exact[key]


_GOLDEN = (np.sqrt(5) - 1) / 2


def _segment_km(
    lat: float, lon: float, lat0: float, lon0: float, lat1: float, lon1: float
) -> float:
    """Geodesic distance from a point to a lon/lat-straight segment (golden-section search along
    it: the distance is unimodal there, the segment being short and near)."""

    def km(t: float) -> float:
        lat_t, lon_t = lat0 + t * (lat1 - lat0), lon0 + t * (lon1 - lon0)
        return Geodesic.WGS84.Inverse(lat, lon, lat_t, lon_t, Geodesic.DISTANCE)["s12"] / 1000

    lo, hi = 0.0, 1.0
    a, b = hi - _GOLDEN, lo + _GOLDEN
    fa, fb = km(a), km(b)
    while hi - lo > 1e-7:  # under 1 mm on a 5.5 km segment
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = km(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = km(b)
    return min(km(0.0), km(1.0), fa, fb)


@dataclass(frozen=True, eq=False)
class Territories:
    """Polygons and their owners (NOBODY for land that is no one's): who owns a point."""

    geometries: np.ndarray  # prepared shapely (multi)polygons
    owners: np.ndarray  # int32, aligned with geometries
    tree: shapely.STRtree
    waters: Waters  # around the owned polygons only
    owner_groups: np.ndarray | None = None  # int32 group of each owner (a province's country)

    @classmethod
    def of(
        cls, geometries: Sequence, owners: Sequence[int], *, owner_groups: Sequence[int] = ()
    ) -> "Territories":
        array = np.asarray(geometries, dtype=object)
        owner_of = np.asarray(owners, dtype=np.int32)
        shapely.prepare(array)
        owned = owner_of != NOBODY
        return cls(
            array,
            owner_of,
            shapely.STRtree(array),
            Waters.of(array[owned], owner_of[owned]),
            np.asarray(owner_groups, dtype=np.int32) if len(owner_groups) else None,
        )

    def owners_at(
        self, lons: np.ndarray, lats: np.ndarray, *, groups: np.ndarray | None = None
    ) -> np.ndarray:
        """The owner of each point: on land the lowest owner covering it (borders included), or
        NOBODY on no one's land; on no polygon, the nearest owner within the territorial sea
        (of the point's group, when groups are given)."""
        lons, lats = np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
        covered = self.covering(lons, lats)
        result = np.where(covered == UNCOVERED, NOBODY, covered).astype(np.int32)
        sea = np.flatnonzero(covered == UNCOVERED)
        if sea.size:
            result[sea] = self.waters.nearest(
                lons[sea],
                lats[sea],
                groups=None if groups is None else np.asarray(groups)[sea],
                owner_groups=self.owner_groups,
            )
        return result

    def covering(self, lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
        """The lowest owner of a polygon covering each point; NOBODY where only no one's land
        covers it, UNCOVERED where nothing does."""
        result = np.full(lons.size, UNCOVERED, dtype=np.int64)
        point, geom = self.tree.query(shapely.points(lons, lats))
        if point.size == 0:
            return result
        # Prepared point-in-polygon per polygon: the tree's own predicate prepares the points,
        # not the polygons (60x slower on country outlines, measured).
        order = np.argsort(geom, kind="stable")
        point, geom = point[order], geom[order]
        inside = np.zeros(point.size, dtype=bool)
        starts = np.flatnonzero(np.r_[True, geom[1:] != geom[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], geom.size], strict=True):
            p = point[lo:hi]
            inside[lo:hi] = shared_geometry.intersects_xy(
                self.geometries[geom[lo]], lons[p], lats[p]
            )
        owner = self.owners[geom[inside]].astype(np.int64)
        # NOBODY (-1) must lose to any owner: rank it after all of them.
        np.minimum.at(result, point[inside], np.where(owner == NOBODY, _NOBODYS_LAND, owner))
        return np.where(result == _NOBODYS_LAND, NOBODY, result)
