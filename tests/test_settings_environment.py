"""Unknown ANJEON_* variables stop every command (service/config.py unknown_environment,
service/cli.py): a review's ANJEON_DISPATCH_INTERVALS=3 ran the service as if unset, while
the same typo in the TOML file was refused."""

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from service import cli
from service.config import Settings, unknown_environment
from service.dispatch.notifiers.registry import NotifierConfigError


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


def test_a_list_is_given_comma_separated_or_as_json(monkeypatch):
    """A review: ANJEON_DUTY_EMAIL=duty@example.org stopped start-up with only "error parsing
    value for field duty_email"; a list needed JSON."""
    monkeypatch.setenv("ANJEON_DUTY_EMAIL", "duty@example.org")
    monkeypatch.setenv("ANJEON_CODE_COUNTRIES", "kr, jp")
    monkeypatch.setenv("ANJEON_TRUSTED_PROXIES", '["10.0.0.0/8", "192.0.2.1"]')
    settings = Settings(secret_key="x" * 40)
    assert settings.duty_email == ["duty@example.org"]
    assert settings.code_countries == ["KR", "JP"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]
    monkeypatch.setenv("ANJEON_TRUSTED_PROXIES", "10.0.0.0/8, not-a-network")
    with pytest.raises(ValidationError, match="'not-a-network' is not an IP address"):
        Settings(secret_key="x" * 40)
    monkeypatch.setenv("ANJEON_TRUSTED_PROXIES", '["10.0.0.0/8"')
    with pytest.raises(ValidationError, match="not a JSON list"):
        Settings(secret_key="x" * 40)


def test_a_data_keys_file_takes_comments_and_names_the_line_of_a_short_key(tmp_path: Path):
    """A review: a comment line in ANJEON_DATA_KEYS_FILE gave only "every data key must be at
    least 32 characters long", naming neither the file nor the line."""
    new, old = "n" * 40, "o" * 40
    keys = tmp_path / "data.keys"
    keys.write_text(f"# rotated 2026-12-07\n{new}\n\n{old}\n")
    settings = Settings(secret_key="x" * 40, data_keys_file=str(keys))
    assert settings.data_key_bytes() == [new.encode(), old.encode()]
    keys.write_text(f"{new}\nshort-one\n")
    with pytest.raises(RuntimeError, match=r"line 2 of .*data\.keys is 9 characters long") as told:
        Settings(secret_key="x" * 40, data_keys_file=str(keys)).data_key_bytes()
    assert "short-one" not in str(told.value)


def test_a_plugin_that_does_not_load_stops_no_command_of_its_own(monkeypatch):
    """A review: the check imported every notifier plugin, so one that failed to import
    stopped `anjeon migrate` and `anjeon staff revoke` too. Its settings are then taken to
    follow the convention, ANJEON_<NAME>_."""

    def broken() -> dict:
        raise NotifierConfigError("notifier plugin 'pigeon' failed to load: needs libfoo 2")

    monkeypatch.setattr(cli, "available", broken)
    monkeypatch.setattr(cli, "entry_points", lambda group: [SimpleNamespace(name="pigeon")])
    monkeypatch.setenv("ANJEON_PIGEON_TOKEN", "t")
    cli._refuse_unknown_environment()  # the plugin's own setting passes
    monkeypatch.setenv("ANJEON_PORTT", "1")
    with pytest.raises(ValueError, match=r"ANJEON_PORTT \(did you mean ANJEON_PORT\?\)"):
        cli._refuse_unknown_environment()


def _anjeon(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ANJEON_")}
    environ |= {"ANJEON_DATABASE_URL": f"sqlite:///{tmp_path / 'anjeon.db'}", **settings}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_with_workers_and_no_feeds_file_stops_instead_of_restarting_them(tmp_path):
    """A review: with --workers 2 the parent never read the feeds file, and uvicorn started
    each failing worker again for ever."""
    done = _anjeon(
        tmp_path,
        "serve",
        "--workers",
        "2",
        ANJEON_SECRET_KEY="k" * 40,
        ANJEON_PORT="8759",
        ANJEON_FEEDS_FILE=str(tmp_path / "feeds.tmol"),
    )
    assert done.returncode == 2
    assert "feeds.tmol: no such file (ANJEON_FEEDS_FILE)" in done.stderr


def test_a_config_file_that_is_not_there_stops_every_command(tmp_path):
    """A review: ANJEON_CONFIG naming a file not there (a forgotten mount) ran on defaults,
    and without config/default.toml either."""
    done = _anjeon(tmp_path, "migrate", ANJEON_CONFIG=str(tmp_path / "anjeon.toml"))
    assert done.returncode == 2
    assert "ANJEON_CONFIG:" in done.stderr and "anjeon.toml: no such file" in done.stderr
    assert not (tmp_path / "anjeon.db").exists()


def test_a_secret_that_starts_with_a_hash_is_a_secret_not_a_comment(tmp_path: Path):
    keys = tmp_path / "data.keys"
    hashed = "#" + "h" * 40
    keys.write_text(f"# the new one first\n{hashed}\n#\n{'o' * 40}\n")
    settings = Settings(secret_key="x" * 40, data_keys_file=str(keys))
    assert settings.data_key_bytes() == [hashed.encode(), b"o" * 40]


def test_what_the_service_writes_only_its_own_user_reads(tmp_path: Path):
    """Found by a privacy review: `anjeon migrate` made the SQLite database (places, answers
    and audit reasons in clear) readable by every user of the machine."""
    database = tmp_path / "anjeon.db"
    environ = {
        **os.environ,
        "ANJEON_DATABASE_URL": f"sqlite:///{database}",
        "ANJEON_SECRET_KEY": "k" * 40,
    }
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert database.exists() and database.stat().st_mode & 0o077 == 0


def test_a_key_file_others_can_read_is_warned_of(tmp_path: Path, caplog):
    keys = tmp_path / "data.keys"
    keys.write_text("n" * 40 + "\n")
    keys.chmod(0o644)
    settings = Settings(secret_key="x" * 40, data_keys_file=str(keys))
    with caplog.at_level(logging.WARNING, logger="anjeon.config"):
        settings.data_key_bytes()
    assert [r.getMessage() for r in caplog.records] == [
        "key file readable by other users: chmod 600 it"
    ]
    caplog.clear()
    keys.chmod(0o600)
    settings.data_key_bytes()
    assert caplog.records == []
