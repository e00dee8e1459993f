"""Run as a script by test_shared_geometry.py: threads place points against shared outlines at
once, as request threads and the sweep do. A heap corrupted by GEOS aborts this process."""

import sys
import threading

import numpy as np
import shapely

from service.geo import matching, subdivisions
from service.geo.areas import Area
from service.geo.waters import Territories

THREADS = 8


def one_round(outlines: list, coastal: Area, country: str, rng: np.random.Generator) -> None:
    west, south, east, north = shapely.total_bounds(outlines)
    lons, lats = rng.uniform(west, east, 4000), rng.uniform(south, north, 4000)
    expected = Territories.of(outlines, list(range(len(outlines)))).covering(lons, lats)
    # Fresh copies: each outline is first used by all the threads at once.
    copies = [shapely.from_wkb(shapely.to_wkb(g)) for g in outlines]
    territories = Territories.of(copies, list(range(len(copies))))
    n = 2000
    places = matching.PlaceSet.build(
        np.arange(n), lons[:n], lats[:n], [country] * n, [0] * n, [0] * n
    )
    start = threading.Barrier(THREADS)
    found: list[np.ndarray] = []
    wrong: list[str] = []

    def place() -> None:
        start.wait()
        for _ in range(3):
            if not np.array_equal(territories.covering(lons, lats), expected):
                wrong.append("covering")
        # A province's territorial sea: the land near it is built and first used at once too.
        found.append(matching.place_hits(coastal, places))

    threads = [threading.Thread(target=place) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong
    assert all(np.array_equal(f, found[0]) for f in found), "threads disagree"


def main(rounds: int) -> None:
    provinces = list(subdivisions.all_subdivisions().values())
    largest = sorted(provinces, key=lambda p: -shapely.get_num_coordinates(p.geometry))[:30]
    rng = np.random.default_rng(7)
    outlines = [p.geometry for p in largest]
    for i in range(rounds):
        coastal = largest[i % len(largest)]
        one_round(outlines, Area(subdivisions=(coastal.code,)), coastal.country, rng)
    print("ok")


if __name__ == "__main__":
    main(int(sys.argv[1]))
