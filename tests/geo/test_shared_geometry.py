"""Shared outlines used by several threads at once (GEOS is not thread-safe on one prepared
geometry): the heap stays sound and every thread gets the same owners. Run in a child process,
since a corrupted heap aborts the process that has it; without the lock in
service/geo/shared_geometry.py this aborted within a few rounds here."""

import subprocess
import sys
from pathlib import Path

STRESS = Path(__file__).with_name("threads_stress.py")


def test_threads_placing_points_on_shared_outlines_at_once_corrupt_nothing():
    done = subprocess.run(
        [sys.executable, str(STRESS), "8"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "ok"
