"""Unknown ANJEON_* variables stop every command (service/config.py unknown_environment,
service/cli.py): a review's ANJEON_DISPATCH_INTERVALS=3 ran the service as if unset, while
the same typo in the TOML file was refused."""

import os
import subprocess
import sys
from pathlib import Path

from service.config import unknown_environment


def test_a_typo_is_named_with_the_setting_it_is_nearest_to():
    environ = {
        "ANJEON_DISPATCH_INTERVALS": "3",
        "ANJEON_SMTP_PASWORD": "x",
        "ANJEON_NOTHING_LIKE_IT": "1",
        "ANJEON_PORT": "8000",  # a setting
        "ANJEON_CONFIG": "config/default.toml",  # read before the settings
        "ANJEON_TEST_DATABASE_URL": "sqlite://",  # the harnesses' own
        "ANJEON_BENCH_N": "1000",
        "ANJEON_PIGEON_TOKEN": "t",  # a plugin notifier's own settings
        "PATH": "/usr/bin",
    }
    assert unknown_environment(environ, plugin_prefixes=["ANJEON_PIGEON_"]) == [
        "ANJEON_DISPATCH_INTERVALS (did you mean ANJEON_DISPATCH_INTERVAL_S?)",
        "ANJEON_NOTHING_LIKE_IT",
        "ANJEON_SMTP_PASWORD (did you mean ANJEON_SMTP_PASSWORD?)",
    ]
    assert any(name.startswith("ANJEON_PIGEON_TOKEN") for name in unknown_environment(environ))


def test_a_command_with_a_typo_in_its_environment_stops_and_changes_nothing(tmp_path: Path):
    database = tmp_path / "anjeon.db"
    environ = {
        **os.environ,
        "ANJEON_DATABASE_URL": f"sqlite:///{database}",
        "ANJEON_SCHEDULER_ENABLE": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "ANJEON_SCHEDULER_ENABLE (did you mean ANJEON_SCHEDULER_ENABLED?)" in done.stderr
    assert not database.exists()
