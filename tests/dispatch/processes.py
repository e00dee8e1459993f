"""`anjeon dispatch --until-idle` processes started by the tests, and the rule that none outlives
its test: a test that fails half-way (a paused process never resumed, a stand-in that did not
exit) would otherwise leave a dispatcher retrying for the rest of the run."""

import subprocess
import sys

STARTED: list[subprocess.Popen] = []


def start(env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dispatch", "--until-idle"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(process)
    return process


def reap() -> list[int]:
    """Kill every started process still running (SIGKILL ends a stopped one too); their PIDs."""
    left = [process for process in STARTED if process.poll() is None]
    for process in left:
        process.kill()
        process.communicate()
    STARTED.clear()
    return [process.pid for process in left]
