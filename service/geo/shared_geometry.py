"""Point-in-polygon on geometries that several threads share (the country and province outlines
loaded once per process, the land near a province's sea), one thread at a time.

GEOS is not safe for two threads using one prepared geometry at once (libgeos/geos#825: its
lazily built indexes and scratch state are shared), and shapely's intersects_xy prepares the
geometry it is given. Two request threads placing new citizens, or a request and the sweep,
testing points against the same cached outline at once corrupted the process's heap (glibc:
"unaligned tcache chunk detected", then abort): seen in `anjeon serve` when a burst of queued
registrations ran together after a database outage. A geometry made for one call (a clone of an
advisory's part) needs none of this."""

import threading

import numpy as np
import shapely

_GEOS_SHARED = threading.Lock()


def intersects_xy(geometry: shapely.Geometry, lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
    """shapely.intersects_xy under the process's one lock for shared geometries."""
    with _GEOS_SHARED:
        return shapely.intersects_xy(geometry, lons, lats)
