"""`anjeon staff create-key | list | revoke` and `anjeon demo` against a real database file."""

import pytest
from fastapi.testclient import TestClient

from service import cli
from service.app import create_app
from service.config import get_settings
from service.migrate import upgrade
from tests.conftest import TEST_SECRET, make_settings


@pytest.fixture
def cli_database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("ANJEON_DATABASE_URL", url)
    monkeypatch.setenv("ANJEON_SECRET_KEY", TEST_SECRET)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_create_key_prints_the_key_last_and_it_works(cli_database, capsys):
    assert cli.main(["staff", "create-key", "--name", "Seoul desk", "--role", "consul"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("ajs_")
    with TestClient(create_app(make_settings(cli_database))) as client:
        me = client.get("/v1/staff/me", headers={"Authorization": f"Bearer {key}"})
        assert me.json()["name"] == "Seoul desk" and me.json()["role"] == "consul"

    assert cli.main(["staff", "list"]) == 0
    listing = capsys.readouterr().out
    assert "Seoul desk" in listing and key not in listing and "active" in listing

    assert cli.main(["staff", "revoke", "--name", "Seoul desk"]) == 0
    assert cli.main(["staff", "list"]) == 0
    assert "revoked" in capsys.readouterr().out


def test_create_key_refuses_duplicates_and_bad_roles(cli_database, capsys):
    assert cli.main(["staff", "create-key", "--name", "a", "--role", "admin"]) == 0
    assert cli.main(["staff", "create-key", "--name", "a", "--role", "admin"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["staff", "create-key", "--name", "b", "--role", "root"])


def test_demo_loads_sample_citizens_once(cli_database, capsys):
    assert cli.main(["demo"]) == 0
    assert "5 demo citizens added" in capsys.readouterr().out
    assert cli.main(["demo"]) == 0
    assert "0 demo citizens added" in capsys.readouterr().out


def test_secret_key_file_is_created_once(tmp_path, capsys):
    path = tmp_path / "var" / "secret.key"
    assert cli.main(["secret-key", "--file", str(path)]) == 0
    first = path.read_text()
    assert len(first.strip()) >= 48 and oct(path.stat().st_mode)[-3:] == "600"
    assert cli.main(["secret-key", "--file", str(path)]) == 0
    assert path.read_text() == first


def test_missing_secret_key_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ANJEON_SECRET_KEY", raising=False)
    monkeypatch.setenv("ANJEON_SECRET_KEY_FILE", "")
    monkeypatch.setenv("ANJEON_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    get_settings.cache_clear()
    try:
        assert cli.main(["demo"]) == 2
    finally:
        get_settings.cache_clear()
    assert "ANJEON_SECRET_KEY" in capsys.readouterr().err
