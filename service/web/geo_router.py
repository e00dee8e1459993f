"""The console's base map: the Natural Earth country outlines the service already ships, as
GeoJSON, so the map needs no tile server and no network beyond this service; and the ISO 3166-2
provinces the service knows (geo/subdivisions.py), for the console's province picker."""

import json
from functools import cache
from typing import Annotated

import shapely
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from service.auth import Viewer
from service.citizens.schemas import country_codes
from service.errors import InvalidInput
from service.geo import countries, subdivisions

router = APIRouter(prefix="/v1/geo", tags=["geo"])

# Measured on the 10m outlines: 0.12° simplification, islands under 0.05 square degrees left
# out (each country keeps at least its largest part) and coordinates on a 0.02° grid bring
# 244 countries from tens of MB to about 360 KB, enough for a map to pick countries on.
_TOLERANCE = 0.12
_MIN_AREA = 0.05
_GRID = 0.02


def _outline(geometry: shapely.Geometry) -> shapely.Geometry:
    polygons = [
        part
        for piece in shapely.get_parts(geometry)
        if piece.geom_type in ("Polygon", "MultiPolygon")
        for part in shapely.get_parts(piece)
    ]
    kept = [p for p in polygons if p.area >= _MIN_AREA] or sorted(polygons, key=lambda p: -p.area)[
        :1
    ]
    whole = shapely.multipolygons(kept)
    small = shapely.set_precision(
        shapely.simplify(whole, _TOLERANCE, preserve_topology=True), _GRID
    )
    # A tiny country vanishes on the grid: it keeps its own finer shape.
    return small if not small.is_empty else shapely.set_precision(whole, _GRID / 10)


@cache
def _countries_geojson() -> bytes:
    boundaries = countries.boundaries()
    features = []
    for country, geometry in zip(boundaries.countries, boundaries.geometries, strict=True):
        outline = _outline(geometry)
        if outline.is_empty:
            continue
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "code": country.code,
                    "name": country.name,
                    "name_ko": country.name_ko,
                },
                "geometry": json.loads(shapely.to_geojson(outline)),
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    return json.dumps(collection, separators=(",", ":"), ensure_ascii=False).encode()


@router.get("/countries")
def country_outlines(_viewer: Viewer) -> Response:
    """Every country's outline (code, English and Korean name), simplified for a base map."""
    return Response(
        _countries_geojson(),
        media_type="application/json",
        headers={"Cache-Control": "private, max-age=3600"},
    )


class SubdivisionOut(BaseModel):
    code: str
    name: str
    name_ko: str


@cache
def _subdivisions_of(country: str) -> tuple[SubdivisionOut, ...]:
    found = [s for s in subdivisions.all_subdivisions().values() if s.country == country]
    return tuple(
        SubdivisionOut(code=s.code, name=s.name, name_ko=s.name_ko)
        for s in sorted(found, key=lambda s: s.code)
    )


@router.get("/subdivisions", response_model=list[SubdivisionOut])
def subdivision_list(
    _viewer: Viewer,
    response: Response,
    country: Annotated[str, Query(json_schema_extra=country_codes)],
) -> list[SubdivisionOut]:
    """A country's ISO 3166-2 first-level subdivisions (code, English and Korean name), the codes
    `area.subdivisions` takes; empty for a country with none known."""
    code = countries.normalise_code(country)
    if code is None:
        raise InvalidInput("country", "not an ISO 3166-1 alpha-2 country code")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return list(_subdivisions_of(code))
