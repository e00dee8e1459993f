"""Territorial waters: the 12-nautical-mile rule, held to exact geodesics near its limit and at
ties, across ±180°, and the land that is no one's."""

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import box

from service.geo import countries, waters
from service.geo.waters import NOBODY, TERRITORIAL_SEA_KM, Territories, Waters

GEOD = Geodesic.WGS84


def _direct(lat: float, lon: float, azimuth: float, km: float) -> tuple[float, float]:
    """(lon, lat) of the point `km` from (lat, lon) along `azimuth`."""
    end = GEOD.Direct(lat, lon, azimuth, km * 1000)
    return end["lon2"], end["lat2"]


def test_the_local_projection_is_within_a_metre_of_the_geodesic():
    rng = np.random.default_rng(3)
    lat0 = rng.uniform(-89.5, 89.5, 3000)
    lon0 = rng.uniform(-180, 180, 3000)
    azimuth, km = rng.uniform(0, 360, 3000), rng.uniform(0, 30, 3000)
    ends = [
        GEOD.Direct(a, o, z, k * 1000) for a, o, z, k in zip(lat0, lon0, azimuth, km, strict=True)
    ]
    lat = np.array([e["lat2"] for e in ends])
    lon = np.array([e["lon2"] for e in ends])
    x, y = waters.local_xy(lat0, lon0, lat, lon)
    assert np.abs(np.hypot(x, y) - km).max() < 0.001


@pytest.mark.parametrize("lat", [0.0, 45.0, -70.0])
@pytest.mark.parametrize("metres", [-300, -4, 4, 300])
def test_the_limit_is_exactly_12_nautical_miles(lat, metres):
    # The box's east edge is a meridian, a geodesic: a geodesic leaving it at 90° measures
    # the distance to it exactly. ±4 m lies inside the projection's tolerance, so the exact
    # geodesic decides there.
    sea = Waters.of([box(10, lat - 1, 11, lat + 1)], [0])
    lon, at = _direct(lat, 11.0, 90.0, TERRITORIAL_SEA_KM + metres / 1000)
    expected = 0 if metres < 0 else NOBODY
    assert sea.nearest(np.array([lon]), np.array([at])).tolist() == [expected]


def test_the_nearer_owner_wins_and_an_exact_tie_goes_to_the_lower_owner():
    sea = Waters.of([box(10.625, -1, 11.0, 1), box(10.0, -1, 10.375, 1)], [1, 0])
    # At the equator the two coasts are mirror images about 10.5°E: equidistant there (exactly:
    # every coordinate is a binary fraction). 3 m off the middle, the exact geodesic decides.
    lons = np.array([10.5, 10.5 - 0.00003, 10.5 + 0.00003, 10.4, 10.6])
    assert sea.nearest(lons, np.zeros(5)).tolist() == [0, 0, 1, 0, 1]


def test_a_point_goes_only_to_an_owner_of_its_own_group():
    sea = Waters.of([box(10.625, -1, 11.0, 1), box(10.0, -1, 10.375, 1)], [1, 0])
    lons, lats = np.array([10.45, 10.45, 10.45]), np.zeros(3)  # 8 km and 19 km off
    found = sea.nearest(lons, lats, groups=np.array([7, 8, -1]), owner_groups=np.array([7, 8]))
    assert found.tolist() == [0, 1, NOBODY]


def test_waters_reach_across_the_antimeridian():
    sea = Waters.of([box(179.8, -1, 180, 1)], [0])
    lons = np.array([-179.95, -179.7])  # 5.6 km and 33 km east of the coast at 180°
    assert sea.nearest(lons, np.zeros(2)).tolist() == [0, NOBODY]


def test_a_point_near_the_pole_is_measured_over_every_longitude():
    sea = Waters.of([box(-180, 89.9, 180, 90)], [0])
    lon, lat = _direct(89.9, 100.0, 180.0, 20.0)
    assert sea.nearest(np.array([lon, -80.0]), np.array([lat, 89.5])).tolist() == [0, NOBODY]


def test_land_is_owned_by_its_lowest_owner_and_no_ones_land_has_no_waters():
    land = Territories.of([box(0, 0, 1, 1), box(1, 0, 2, 1), box(5, 0, 6, 1)], [1, 0, NOBODY])
    lons = np.array([0.5, 1.0, 5.5, 6.1, 2.1, 9.0])
    lats = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    # Inside, on a shared border, on no one's land, off no one's land, off owned land, far.
    assert land.owners_at(lons, lats).tolist() == [1, 0, NOBODY, NOBODY, 0, NOBODY]


def test_reach_boxes_hold_the_sea_and_wrap_at_the_antimeridian():
    boxes = waters.reach_boxes(179.9, 10.0, 180.0, 11.0)
    assert boxes[0][0] < 179.9 and boxes[0][2] == 180.0
    assert boxes[1][0] == -180.0 and boxes[1][2] > -179.9
    assert boxes[0][1] < 10.0 - 0.2 and boxes[0][3] > 11.0 + 0.2
    assert waters.reach_boxes(0.0, 89.9, 1.0, 90.0) == [
        (-180.0, 89.9 - waters.REACH_LAT_DEG, 180.0, 90.0)
    ]


def test_on_real_coasts_the_fast_distance_is_within_the_tolerance_of_the_exact_one():
    # The Aegean: hundreds of Greek and Turkish islands, coasts of every orientation.
    land = countries.boundaries().territories
    rng = np.random.default_rng(12)
    lons, lats = rng.uniform(23, 28, 400), rng.uniform(36, 40, 400)
    at_sea = land.covering(lons, lats) == waters.UNCOVERED
    lons, lats = lons[at_sea][:60], lats[at_sea][:60]
    sea = land.waters
    point, segment = sea._segments_near(lons, lats)
    fast = sea._approx_km(lons[point], lats[point], segment)
    checked = 0
    for i in range(lons.size):
        mine = point == i
        if not mine.any() or fast[mine].min() > TERRITORIAL_SEA_KM + 1:
            continue
        near = segment[mine][fast[mine] <= fast[mine].min() + 0.5]
        exact = min(
            waters._segment_km(lats[i], lons[i], sea.y0[s], sea.x0[s], sea.y1[s], sea.x1[s])
            for s in near.tolist()
        )
        assert abs(exact - fast[mine].min()) < waters._TOLERANCE_KM / 2
        checked += 1
    assert checked > 20
