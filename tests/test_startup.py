"""A process's start-up: the country boundaries loaded once and start-up's objects frozen, so
that full garbage collections skip them (service/startup.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc
from service.geo import countries
from service.startup import load_for_life
before = gc.get_freeze_count()
load_for_life()
frozen = gc.get_freeze_count()
load_for_life()
print(before, frozen, gc.get_freeze_count(), countries.boundaries.cache_info().currsize)
"""


def test_start_up_loads_the_boundaries_and_freezes_once() -> None:
    # A fresh interpreter: the test process has long since made (and frozen) its own objects.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, frozen, again, loaded = map(int, out.stdout.split())
    assert before == 0
    assert frozen > 50_000  # the boundaries and the imported modules, at least
    assert again == frozen  # a second app in the same process freezes nothing more
    assert loaded == 1
