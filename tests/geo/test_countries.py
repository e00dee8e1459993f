"""Offline country look-up: the documented answers for disputed areas, borders and the sea."""

import numpy as np
import pytest
import shapefile
import shapely
from shapely.geometry import shape

from service.geo import countries

CASES = [
    ("Seoul", 126.9780, 37.5665, "KR"),
    ("Paris", 2.3522, 48.8566, "FR"),  # ISO_A2 is -99 for France; ISO_A2_EH is used
    ("Oslo", 10.7522, 59.9139, "NO"),
    ("Pristina", 21.1655, 42.6629, "XK"),
    ("Simferopol, Crimea", 34.1024, 44.9521, "UA"),
    ("Taipei", 121.5654, 25.0330, "TW"),
    ("Laayoune, Western Sahara", -13.2, 27.15, "EH"),
    ("Suva side of the antimeridian", 180.0, -16.5, "FJ"),
    ("Chukotka at -179.99", -179.99, 65.5, "RU"),
    ("mid-Atlantic", -30.0, 30.0, None),
    ("Bir Tawil (claimed by nobody)", 33.75, 21.85, None),
]


@pytest.mark.parametrize(("lon", "lat", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_country_at(lon, lat, code):
    assert countries.boundaries().code_at(lon, lat) == code


def test_vectorised_lookup_matches_single_lookups():
    lons = np.array([c[1] for c in CASES])
    lats = np.array([c[2] for c in CASES])
    assert countries.boundaries().codes_at(lons, lats) == [c[3] for c in CASES]


def test_codes_are_validated():
    assert countries.normalise_code(" kr ") == "KR"
    assert countries.normalise_code("XK") == "XK"
    assert countries.normalise_code("XX") is None
    assert countries.normalise_code("UK") is None  # the ISO code is GB


def test_fips_codes_are_kept_for_state_department_feeds():
    by_code = {c.code: c for c in countries.boundaries().countries}
    assert by_code["KR"].fips == "KS" and by_code["DE"].fips == "GM" and by_code["GB"].fips == "UK"
    assert by_code["KR"].name_ko == "대한민국"


def _ring(west: float, south: float, east: float, north: float, *, clockwise: bool) -> list:
    corners = [(west, south), (west, north), (east, north), (east, south)]
    corners = corners if clockwise else corners[::-1]
    return [*corners, corners[0]]


def _record(rings: list[list]) -> shapefile.Shape:
    points = [point for ring in rings for point in ring]
    parts = [int(start) for start in np.cumsum([0] + [len(ring) for ring in rings[:-1]])]
    return shapefile.Shape(shapefile.POLYGON, points, parts)


# Rings as a shapefile stores them: outer rings clockwise, holes counter-clockwise.
OUTLINES = {
    "one outer ring with two holes": [
        _ring(0, 0, 10, 10, clockwise=True),
        _ring(1, 1, 2, 2, clockwise=False),
        _ring(5, 5, 6, 6, clockwise=False),
    ],
    # Baarle: an enclave with a counter-enclave in it, and a hole inside that again.
    "an island in a hole, its hole its own": [
        _ring(0, 0, 10, 10, clockwise=True),
        _ring(2, 2, 8, 8, clockwise=False),
        _ring(3, 3, 7, 7, clockwise=True),
        _ring(4, 4, 5, 5, clockwise=False),
        _ring(20, 0, 30, 10, clockwise=True),
        _ring(21, 1, 22, 2, clockwise=False),
    ],
    "a hole with no outer ring around it": [
        _ring(0, 0, 10, 10, clockwise=True),
        _ring(20, 0, 30, 10, clockwise=True),
        _ring(40, 0, 41, 1, clockwise=False),
    ],
    "every ring wound the wrong way": [
        _ring(0, 0, 1, 1, clockwise=False),
        _ring(5, 5, 6, 6, clockwise=False),
    ],
}


@pytest.mark.parametrize("rings", OUTLINES.values(), ids=OUTLINES.keys())
def test_outline_reads_rings_as_pyshp_does(rings):
    record = _record(rings)
    # pyshp's own reading of a polygon record is the rule countries.outline keeps.
    ours = countries.outline(record.points, record.parts)
    theirs = shape(record.__geo_interface__)
    assert ours.geom_type == theirs.geom_type
    assert shapely.equals_exact(shapely.normalize(ours), shapely.normalize(theirs))


def test_every_country_outline_is_pyshps():
    reader = countries._read_shapefile()
    shapes = list(reader.iterShapes())
    ours = [shapely.make_valid(countries.outline(s.points, s.parts)) for s in shapes]
    theirs = [shapely.make_valid(shape(s.__geo_interface__)) for s in shapes]
    assert len(ours) > 200
    different = [
        i
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if not shapely.equals_exact(shapely.normalize(a), shapely.normalize(b))
    ]
    assert different == []
