"""Antimeridian handling and validity of advisory areas."""

import pytest

from service.geo import matching
from service.geo.areas import Area, Circle, InvalidArea, check_geometry, crosses_antimeridian

STRAIGHT_ACROSS = {
    "type": "Polygon",
    "coordinates": [[[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]],
}
RFC7946_SPLIT = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[170, -10], [180, -10], [180, 10], [170, 10], [170, -10]]],
        [[[-180, -10], [-170, -10], [-170, 10], [-180, 10], [-180, -10]]],
    ],
}


def _hits(geometry, points):
    area = Area(geometry=check_geometry(geometry, field="g", max_vertices=1000))
    n = len(points)
    places = matching.PlaceSet.build(
        list(range(n)),
        [p[0] for p in points],
        [p[1] for p in points],
        [None] * n,
        [-1] * n,
        [-1] * n,
    )
    hit_ids = set(places.citizen_ids[matching.place_hits(area, places)].tolist())
    return [i in hit_ids for i in range(n)]


POINTS = [(175, 0), (-175, 0), (180, 0), (-180, 0), (179.99, 5), (-179.99, 5), (0, 0), (160, 0)]
EXPECTED = [True, True, True, True, True, True, False, False]


@pytest.mark.parametrize("geometry", [STRAIGHT_ACROSS, RFC7946_SPLIT], ids=["straight", "split"])
def test_antimeridian_polygons_cover_both_sides_only(geometry):
    assert _hits(geometry, POINTS) == EXPECTED


def test_straight_ring_is_split_into_two_parts():
    result = check_geometry(STRAIGHT_ACROSS, field="g", max_vertices=100)
    assert len(result.geoms) == 2
    assert result.area == pytest.approx(400)
    assert crosses_antimeridian([(170, 0), (-170, 0)])
    assert not crosses_antimeridian([(10, 0), (-10, 0)])


def test_hole_is_outside_and_boundary_inside():
    with_hole = {
        "type": "Polygon",
        "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
            [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]],
        ],
    }
    assert _hits(with_hole, [(5, 5), (2, 2), (10, 5), (0, 0), (4, 5), (11, 5)]) == [
        False,
        True,
        True,
        True,
        True,
        False,
    ]


def test_overlapping_multipolygon_is_refused():
    overlapping = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]],
            [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]],
        ],
    }
    with pytest.raises(InvalidArea) as error:
        check_geometry(overlapping, field="area.geometry", max_vertices=100)
    assert error.value.field == "area.geometry.coordinates"


def test_reaches_a_place_in_the_area_and_in_the_window():
    """What the dispatcher asks of a citizen's own places (matching.reaches_a_place)."""
    tokyo = Area(circles=(Circle(35.68, 139.69, 50),), country_only=("JP",))
    day = 20_000
    today = matching.Today(on_from=day, now_s=(day + 0.5) * 86_400)  # noon UTC
    target = matching.Target(0, tokyo, start_day=day, end_day=day + 10, active_now=True)
    here, osaka = (139.7, 35.7, "JP"), (135.5, 34.69, "JP")
    now = (matching.CURRENT, matching.CURRENT)
    assert matching.reaches_a_place(target, [(*here, *now)], today=today)
    assert not matching.reaches_a_place(target, [(*osaka, *now)], today=today)
    assert matching.reaches_a_place(target, [(*osaka, *now), (*here, *now)], today=today)
    assert matching.reaches_a_place(target, [(*here, day + 5, day + 8)], today=today)
    # A trip after the advisory ends, or one over: not what reached them.
    assert not matching.reaches_a_place(target, [(*here, day + 21, day + 25)], today=today)
    assert not matching.reaches_a_place(target, [(*here, day - 9, day - 1)], today=today)
    # Not in effect yet: a current location waits, as in matching.
    later = matching.Target(0, tokyo, start_day=day + 1, end_day=day + 10, active_now=False)
    assert not matching.reaches_a_place(later, [(*here, *now)], today=today)
