"""How `make test` splits the suite into legs (tests/legs.py), and the seconds it records."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.legs import SECONDS_FILE, UNTIMED_S, legs_for

ROOT = Path(__file__).resolve().parent.parent


def test_each_test_runs_in_one_leg_and_the_legs_end_close_together():
    seconds = {f"t{n}": s for n, s in enumerate([80, 70, 60, 45, 30, 25, 20, 9, 5, 3, 2, 1.5])}
    nodeids = [*seconds, *(f"quick{n}" for n in range(400))]
    leg_of = legs_for(nodeids, 4, seconds)
    assert set(leg_of) == set(nodeids) and set(leg_of.values()) == {0, 1, 2, 3}
    loads = [0.0] * 4
    for nodeid, leg in leg_of.items():
        loads[leg] += seconds.get(nodeid, UNTIMED_S)
    # Longest first to the least loaded leg: no leg ends later than the next test would take.
    assert max(loads) - min(loads) <= UNTIMED_S
    # The same split in every leg's process: each keeps only its own.
    assert legs_for(list(reversed(nodeids)), 4, seconds) == leg_of


def test_the_recorded_seconds_are_of_tests_that_exist():
    recorded = json.loads(SECONDS_FILE.read_text())
    assert recorded, "tests/leg_seconds.json is empty: scripts/test_legs.py --record-seconds"
    files = {nodeid.split("::")[0] for nodeid in recorded}
    assert all((ROOT / path).is_file() for path in files), sorted(
        path for path in files if not (ROOT / path).is_file()
    )
    assert all(seconds >= 1.0 for seconds in recorded.values())


def test_a_leg_writes_what_each_of_its_tests_took(tmp_path):
    suite = tmp_path / "test_two.py"
    suite.write_text(
        "import time\n\ndef test_slow():\n    time.sleep(0.3)\n\ndef test_quick():\n    pass\n"
    )
    # Its own rootdir: in CI the temporary directory lies inside the checkout.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "seconds.json"
    env = {**os.environ, "ANJEON_TEST_SECONDS_OUT": str(out), "PYTHONPATH": str(ROOT)}
    env.pop("ANJEON_TEST_SHARD", None)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.legs", "-p", "no:cacheprovider", suite],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    took = json.loads(out.read_text())
    assert set(took) == {"test_two.py::test_slow", "test_two.py::test_quick"}
    assert took["test_two.py::test_slow"] >= 0.3 > took["test_two.py::test_quick"]
