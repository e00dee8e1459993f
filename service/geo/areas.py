"""Advisory areas: validation (RFC 7946 and shapely validity, with clear field-level errors),
antimeridian handling and the shapely form the matcher uses. Never a silent make_valid."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.validation import explain_validity

from service.geo import countries, subdivisions

MAX_RADIUS_KM = 2000.0


class InvalidArea(ValueError):
    """An area that is not well-formed, naming the offending field by its JSON path. Callers
    turn it into their own error (a 422 for staff input, a rejected item for a feed)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_WEST = box(-180, -90, 180, 90)
_EAST = box(180, -90, 540, 90)


@dataclass(frozen=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True)
class Area:
    """The union of countries, a (multi)polygon and circles. `zones` are feed zone codes kept for
    the record (NWS UGC): nothing matches on them until zone polygons exist."""

    countries: tuple[str, ...] = ()
    subdivisions: tuple[str, ...] = ()  # ISO 3166-2, matched by their offline polygons
    geometry: MultiPolygon | None = None
    circles: tuple[Circle, ...] = ()
    zones: tuple[str, ...] = ()
    description: str = ""
    # The Korean words of a feed that names the area in Korean beside its English words (None:
    # it gave none). Kept even when empty or the same as `description`: an area stored without
    # the key was stored before Korean words were kept (see ingest._same_content).
    description_ko: str | None = None
    notes: tuple[str, ...] = field(default=())
    # Countries the shapes cover part of, whose citizens known only by country are reached too
    # (set for urgent levels: over-telling beats missing someone; see reaching_country_only).
    country_only: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.countries or self.subdivisions or self.geometry is not None or self.circles
        )

    def to_json(self) -> dict:
        # description_ko only when given: the snapshots of every other advisory stay as they
        # were, so re-importing one is still "no change" (a changed snapshot alerts again).
        korean = {"description_ko": self.description_ko} if self.description_ko is not None else {}
        return {
            "countries": list(self.countries),
            "subdivisions": list(self.subdivisions),
            "geometry": mapping(self.geometry) if self.geometry is not None else None,
            "circles": [
                {"lat": c.lat, "lon": c.lon, "radius_km": c.radius_km} for c in self.circles
            ],
            "zones": list(self.zones),
            "description": self.description,
            **korean,
            "notes": list(self.notes),
            "country_only": list(self.country_only),
        }

    def reaching_country_only(self, reach: bool) -> "Area":
        """This area, reaching (or not) the country-only citizens of every country its shapes
        cover part of: a Tokyo circle then tells citizens registered only as "JP"."""
        if not reach:
            return replace(self, country_only=())
        touched = sorted(partly_covered_countries(self) - set(self.countries))
        return replace(self, country_only=tuple(touched))


def area_from_json(data: dict) -> Area:
    """Rebuild a stored (already validated) area."""
    geometry = data.get("geometry")
    return Area(
        countries=tuple(data.get("countries") or ()),
        subdivisions=tuple(data.get("subdivisions") or ()),
        geometry=shape(geometry) if geometry else None,
        circles=tuple(Circle(**c) for c in data.get("circles") or ()),
        zones=tuple(data.get("zones") or ()),
        description=data.get("description") or "",
        description_ko=data.get("description_ko"),
        notes=tuple(data.get("notes") or ()),
        country_only=tuple(data.get("country_only") or ()),
    )


# Circles are tested against country outlines as polygons a little larger than the circle:
# a country whose coast the circle nearly touches is told too (over-telling beats missing).
_CIRCLE_MARGIN = 1.05
_KM_PER_DEGREE = 111.32


def partly_covered_countries(area: Area) -> set[str]:
    """Codes of the countries the area's polygon, circles and provinces cover some of."""
    shapes = list(area.geometry.geoms) if area.geometry is not None else []
    for circle in area.circles:
        radius_deg = circle.radius_km * _CIRCLE_MARGIN / _KM_PER_DEGREE
        stretch = 1 / max(math.cos(math.radians(circle.lat)), 0.05)
        disc = affinity.scale(
            shapely.Point(circle.lon, circle.lat).buffer(radius_deg), xfact=stretch, yfact=1.0
        )
        # A disc across the antimeridian is tested on both sides of it.
        shapes += [disc, affinity.translate(disc, xoff=360), affinity.translate(disc, xoff=-360)]
    # Parts beyond 180° (an antimeridian-crossing polygon's eastern half) back into range.
    shapes = [affinity.translate(s, xoff=-360) if s.bounds[0] >= 180 else s for s in shapes]
    found = {code.split("-", 1)[0] for code in area.subdivisions}
    if shapes:
        found |= countries.boundaries().codes_touching(shapes)
    return found


def check_countries(codes: Sequence[str], *, field: str) -> tuple[str, ...]:
    result = []
    for i, raw in enumerate(codes):
        code = countries.normalise_code(raw) if isinstance(raw, str) else None
        if code is None:
            raise InvalidArea(f"{field}[{i}]", f"{raw!r} is not an ISO 3166-1 alpha-2 code")
        if code not in result:
            result.append(code)
    return tuple(result)


def check_subdivisions(codes: Sequence[str], *, field: str) -> tuple[str, ...]:
    result = []
    for i, raw in enumerate(codes):
        code = subdivisions.normalise_code(raw) if isinstance(raw, str) else None
        if code is None:
            raise InvalidArea(
                f"{field}[{i}]", f"{raw!r} is not an ISO 3166-2 subdivision we hold polygons for"
            )
        if code not in result:
            result.append(code)
    return tuple(result)


def check_circle(lat: float, lon: float, radius_km: float, *, field: str) -> Circle:
    _check_position([lon, lat], field=field)
    if not (isinstance(radius_km, int | float) and math.isfinite(radius_km)):
        raise InvalidArea(f"{field}.radius_km", "must be a finite number")
    if not 0 < radius_km <= MAX_RADIUS_KM:
        raise InvalidArea(
            f"{field}.radius_km", f"must be more than 0 and at most {MAX_RADIUS_KM:.0f} km"
        )
    return Circle(lat=float(lat), lon=float(lon), radius_km=float(radius_km))


def check_geometry(geojson: object, *, field: str, max_vertices: int) -> MultiPolygon:
    """A GeoJSON Polygon or MultiPolygon, checked per RFC 7946, as a MultiPolygon split at the
    antimeridian where a ring is written straight across it."""
    if not isinstance(geojson, dict):
        raise InvalidArea(field, "must be a GeoJSON object")
    kind, coordinates = geojson.get("type"), geojson.get("coordinates")
    extra = set(geojson) - {"type", "coordinates", "bbox"}
    if extra:
        raise InvalidArea(f"{field}.{sorted(extra)[0]}", "unknown member of a GeoJSON geometry")
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            raise InvalidArea(f"{field}.coordinates", "a MultiPolygon needs at least one polygon")
        polygons = coordinates
    else:
        raise InvalidArea(f"{field}.type", "must be Polygon or MultiPolygon")
    vertices = 0
    parts: list[Polygon] = []
    for p, rings in enumerate(polygons):
        path = f"{field}.coordinates" + (f"[{p}]" if kind == "MultiPolygon" else "")
        checked = _check_rings(rings, field=path)
        vertices += sum(len(r) for r in checked)
        if vertices > max_vertices:
            raise InvalidArea(
                f"{field}.coordinates", f"more than {max_vertices} vertices; simplify the shape"
            )
        parts.extend(_polygon_parts(checked, field=path))
    result = MultiPolygon(parts)
    if len(polygons) > 1 and not result.is_valid:
        raise InvalidArea(
            f"{field}.coordinates", f"invalid MultiPolygon: {explain_validity(result)}"
        )
    return result


def _check_rings(rings: object, *, field: str) -> list[list[tuple[float, float]]]:
    if not isinstance(rings, list) or not rings:
        raise InvalidArea(field, "a polygon is a list of linear rings (outer ring first)")
    checked = []
    for r, ring in enumerate(rings):
        path = f"{field}[{r}]"
        if not isinstance(ring, list) or len(ring) < 4:
            raise InvalidArea(path, "a linear ring needs at least 4 positions")
        positions = [_check_position(pos, field=f"{path}[{i}]") for i, pos in enumerate(ring)]
        if positions[0] != positions[-1]:
            raise InvalidArea(path, "ring is not closed: the last position must equal the first")
        checked.append(positions)
    return checked


def _check_position(position: object, *, field: str) -> tuple[float, float]:
    if not isinstance(position, list | tuple) or len(position) not in (2, 3):
        raise InvalidArea(field, "a position is [lon, lat] (or [lon, lat, alt])")
    numbers = position[:2]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        raise InvalidArea(field, "coordinates must be numbers")
    lon, lat = float(numbers[0]), float(numbers[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InvalidArea(field, "coordinates must be finite numbers")
    if not -180 <= lon <= 180:
        raise InvalidArea(field, f"longitude {lon} is outside [-180, 180]")
    if not -90 <= lat <= 90:
        raise InvalidArea(field, f"latitude {lat} is outside [-90, 90]")
    return (lon, lat)


def crosses_antimeridian(ring: Sequence[tuple[float, float]]) -> bool:
    """An edge spanning more than 180° of longitude is read as the short way across ±180°.
    An edge from -180 to 180 runs along the map's edge (how RFC 7946 draws a polar cap)."""
    return any(
        abs(b[0] - a[0]) > 180 and not (abs(a[0]) == 180 and abs(b[0]) == 180)
        for a, b in pairwise(ring)
    )


def _polygon_parts(rings: list[list[tuple[float, float]]], *, field: str) -> list[Polygon]:
    if any(crosses_antimeridian(r) for r in rings):
        # Unwrap to 0..360 so the ring is continuous, then cut at 180 and shift the east part.
        unwrapped = [[(lon + 360 if lon < 0 else lon, lat) for lon, lat in r] for r in rings]
        polygon = Polygon(unwrapped[0], unwrapped[1:])
        _require_valid(polygon, field=field)
        west = polygon.intersection(_WEST)
        east = affinity.translate(polygon.intersection(_EAST), xoff=-360)
        return [p for part in (west, east) for p in _polygons_of(part)]
    polygon = Polygon(rings[0], rings[1:])
    _require_valid(polygon, field=field)
    return [polygon]


def _require_valid(polygon: Polygon, *, field: str) -> None:
    if not polygon.is_valid:
        raise InvalidArea(field, f"invalid polygon: {explain_validity(polygon)}")
    if polygon.area == 0:
        raise InvalidArea(field, "polygon has no area")


def _polygons_of(geometry: shapely.Geometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    if hasattr(geometry, "geoms"):
        return [g for g in geometry.geoms if isinstance(g, Polygon) and not g.is_empty]
    return []
