"""`anjeon dispatch` as a worker says at start what it runs with (an operator's review: it
logged nothing until it stopped), and stops gracefully on SIGTERM."""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.migrate import upgrade


def test_a_dispatch_worker_says_it_started_and_stops_on_sigterm(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'anjeon.db'}"
    upgrade(url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANJEON_")},
        "ANJEON_DATABASE_URL": url,
        "ANJEON_SECRET_KEY": secrets.token_urlsafe(40),
        "ANJEON_DISPATCH_INTERVAL_S": "0.5",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dispatch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "dispatch worker started" not in seen and time.monotonic() < deadline:
            line = worker.stderr.readline()  # type: ignore[union-attr]
            if not line and worker.poll() is not None:
                break
            seen += line
        assert "dispatch worker started" in seen, seen
        assert '"sms": "console"' in seen  # which notifier sends each channel
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "stopping: no more claims" in err
    assert out.startswith("claimed 0 alerts")
