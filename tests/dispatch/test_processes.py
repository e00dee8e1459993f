"""The tests' own dispatcher processes do not outlive a test that failed half-way."""

import os
import signal

from tests.conftest import TEST_SECRET
from tests.dispatch import processes


def test_a_stopped_dispatcher_left_behind_is_killed_by_the_reaper():
    env = {
        **os.environ,
        # Nothing answers there: the process retries for ever, as a leaked one would.
        "ANJEON_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none",
        "ANJEON_SECRET_KEY": TEST_SECRET,
    }
    left = processes.start(env)
    left.send_signal(signal.SIGSTOP)
    assert processes.reap() == [left.pid]
    assert left.returncode == -signal.SIGKILL
    assert processes.STARTED == []
