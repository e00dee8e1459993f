"""Which leg of `make test` runs which test (scripts/test_legs.py runs the legs side by side,
each with ANJEON_TEST_SHARD="k/n"). Longest first, each test goes to the leg with the fewest
seconds so far, by the seconds tests/leg_seconds.json holds for it (a test not in it counts
UNTIMED_S). Every fourth test, with only the long ones placed by their seconds, left one CI
run's legs ending 106 s apart, the machine part idle meanwhile.

With ANJEON_TEST_SECONDS_OUT set, a leg writes each test's seconds (setup, call and teardown)
to that file: `scripts/test_legs.py --record-seconds` makes tests/leg_seconds.json from them."""

import json
import os
from pathlib import Path

import pytest

SECONDS_FILE = Path(__file__).with_name("leg_seconds.json")
UNTIMED_S = 0.15  # the mean of those under a second; the file holds the rest

_took: dict[str, float] = {}


def legs_for(nodeids: list[str], shares: int, seconds: dict[str, float]) -> dict[str, int]:
    """Each test's leg (0 to shares - 1): longest first, to the least loaded leg; ties in the
    order of their node ids, so that every leg's process makes the same split."""
    loads = [0.0] * shares
    leg_of = {}
    for nodeid in sorted(nodeids, key=lambda nodeid: (-seconds.get(nodeid, UNTIMED_S), nodeid)):
        leg = loads.index(min(loads))
        leg_of[nodeid] = leg
        loads[leg] += seconds.get(nodeid, UNTIMED_S)
    return leg_of


@pytest.hookimpl(trylast=True)  # after -k has chosen the leg's tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = os.environ.get("ANJEON_TEST_SHARD")
    if not shard:
        return
    share, shares = map(int, shard.split("/"))
    seconds = json.loads(SECONDS_FILE.read_text())
    leg_of = legs_for([item.nodeid for item in items], shares, seconds)
    kept = [item for item in items if leg_of[item.nodeid] == share]
    dropped = [item for item in items if leg_of[item.nodeid] != share]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("ANJEON_TEST_SECONDS_OUT"):
        _took[report.nodeid] = _took.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if out := os.environ.get("ANJEON_TEST_SECONDS_OUT"):
        Path(out).write_text(json.dumps(_took))
