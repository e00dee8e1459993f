"""What a long-running process does once before it serves: load what it keeps for life, then
keep that out of the garbage collector's full passes."""

import gc
from functools import cache

from service.db import utcnow
from service.geo import clocks, countries


@cache  # once per process, however many apps it makes (the tests make hundreds)
def load_for_life() -> None:
    """Load the country boundaries (about a second and 60 MB; registration, feed imports, urgent
    advisories' country reach, the map endpoints and the dispatcher's quiet hours for a place
    known only by its country read them: each process pays once, at start) and freeze
    what start-up made. Every full collection walks every tracked object, and these (the
    boundaries, the app, the imported modules: about 165,000) live as long as the process.
    A new advisory on SQLite fetches some 60,000 rows, whose allocations set off full
    collections: frozen, start-up's objects are skipped (docs/benchmarks.md has the figures)."""
    countries.boundaries()
    clocks.one_clock_offsets(utcnow())  # the zone at each part of each outline, read once
    gc.collect()  # what start-up left as garbage is freed now, not frozen with the rest
    gc.freeze()
