"""Property test: the vectorised engine against a brute-force oracle (one point at a time:
shapely covers in unwrapped longitudes for polygons, geopy's WGS 84 geodesic for circles)."""

import math

import numpy as np
from geopy.distance import geodesic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon

from service.geo import matching
from service.geo.areas import Area, check_circle, check_geometry

DAY_ONE = matching.Today(on_from=1, now_s=1.5 * 86_400)  # noon UTC of day 1


def _wrap(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


def _places(points):
    n = len(points)
    return matching.PlaceSet.build(
        list(range(n)),
        [p[0] for p in points],
        [p[1] for p in points],
        [None] * n,
        [-1] * n,
        [-1] * n,
    )


def _hits(area, points) -> set[int]:
    places = _places(points)
    return set(places.citizen_ids[matching.place_hits(area, places)].tolist())


@st.composite
def star_polygons(draw):
    # Six decimals (about 10 cm), as real coordinates come.
    lon0 = round(draw(st.floats(-180, 180)), 6)
    lat0 = round(draw(st.floats(-60, 60)), 6)
    n = draw(st.integers(4, 12))
    radii = draw(st.lists(st.floats(1.0, 15.0), min_size=n, max_size=n))
    angles = sorted(
        draw(st.lists(st.floats(0, 2 * math.pi - 0.01), min_size=n, max_size=n, unique=True))
    )
    ring = [
        (round(lon0 + r * math.cos(a), 6), round(lat0 + r * math.sin(a), 6))
        for r, a in zip(radii, angles, strict=True)
    ]
    return lon0, lat0, ring


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.large_base_example],
)
@given(star_polygons(), st.randoms(use_true_random=False))
def test_polygons_match_the_oracle(shape, rnd):
    lon0, lat0, ring = shape
    unwrapped = Polygon(ring)
    if not unwrapped.is_valid or unwrapped.area < 1e-6:
        return
    # Written the way CAP feeds write it: longitudes wrapped, straight across ±180 if it crosses.
    coords = [[_wrap(x), y] for x, y in ring]
    coords.append(coords[0])
    area = Area(
        geometry=check_geometry(
            {"type": "Polygon", "coordinates": [coords]}, field="g", max_vertices=100
        )
    )
    points = [
        (_wrap(lon0 + rnd.uniform(-20, 20)), max(-90, min(90, lat0 + rnd.uniform(-20, 20))))
        for _ in range(200)
    ]
    expected = {
        i
        for i, (lon, lat) in enumerate(points)
        # the point in the polygon's own unwrapped frame, whichever side of ±180 it was given
        if any(unwrapped.covers(Point(lon + shift, lat)) for shift in (-360, 0, 360))
    }
    got = _hits(area, points)
    assert got == expected


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.large_base_example],
)
@given(
    st.floats(-180, 180),
    st.floats(-85, 85),
    st.floats(1.0, 2000.0),
    st.randoms(use_true_random=False),
)
def test_circles_match_the_geodesic_oracle(lon0, lat0, radius_km, rnd):
    circle = check_circle(lat0, lon0, radius_km, field="c")
    area = Area(circles=(circle,))
    points = []
    for _ in range(200):
        bearing = rnd.uniform(0, 360)
        distance = radius_km * rnd.uniform(0.9, 1.1)  # crowd the edge, where mistakes happen
        p = geodesic(kilometers=distance).destination((lat0, lon0), bearing)
        points.append((p.longitude, p.latitude))
    points += [(rnd.uniform(-180, 180), rnd.uniform(-90, 90)) for _ in range(50)]
    expected = {
        i
        for i, (lon, lat) in enumerate(points)
        if geodesic((lat0, lon0), (lat, lon)).km <= radius_km
    }
    assert _hits(area, points) == expected


def test_engine_handles_no_places_and_country_only_places():
    places = matching.PlaceSet.build(
        [1, 2], [None, 10.0], [None, 10.0], ["JP", "NG"], [-1, -1], [-1, -1]
    )
    assert places.n_points == 1
    area = Area(countries=("JP",), circles=(check_circle(10.0, 10.0, 5, field="c"),))
    assert sorted(places.citizen_ids[matching.place_hits(area, places)].tolist()) == [1, 2]
    empty = _places([])
    assert matching.place_hits(area, empty).size == 0
    assert np.array_equal(
        matching.match(matching.Target(1, area, 0, 10**6, True), empty, today=DAY_ONE), []
    )


@given(st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=200))
def test_sorted_unique_is_numpys_unique(values):
    array = np.array(values, dtype=np.int64)
    assert matching.sorted_unique(array).tolist() == np.unique(array).tolist()
