"""Alert links point at the service itself: the public URL defaults to its host and port."""

import pytest

from service.config import Settings
from service.dispatch.reference import Links
from service.privacy import PersonalDataVault
from tests.conftest import TEST_SECRET


@pytest.fixture
def no_url_in_config(tmp_path, monkeypatch):
    """A config file that leaves public_base_url unset, and no ANJEON_PUBLIC_BASE_URL."""
    config = tmp_path / "anjeon.toml"
    config.write_text('host = "127.0.0.1"\nport = 8000\n')
    monkeypatch.setenv("ANJEON_CONFIG", str(config))
    monkeypatch.delenv("ANJEON_PUBLIC_BASE_URL", raising=False)


def test_links_follow_the_port_the_service_runs_on(no_url_in_config, monkeypatch):
    monkeypatch.setenv("ANJEON_PORT", "18731")
    settings = Settings(secret_key=TEST_SECRET)
    assert settings.public_base_url == "http://127.0.0.1:18731"
    links = Links(settings.public_base_url, PersonalDataVault(TEST_SECRET.encode()))
    assert links.details(links.reference(7)).startswith("http://127.0.0.1:18731/a/7.")


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:9000"),  # a wildcard bind is reached on loopback
        ("::", "http://127.0.0.1:9000"),
        ("::1", "http://[::1]:9000"),
        ("anjeon.internal", "http://anjeon.internal:9000"),
    ],
)
def test_default_url_from_host_and_port(no_url_in_config, host, url):
    assert Settings(secret_key=TEST_SECRET, host=host, port=9000).public_base_url == url


def test_an_explicit_public_url_wins(no_url_in_config, monkeypatch):
    monkeypatch.setenv("ANJEON_PORT", "18731")
    monkeypatch.setenv("ANJEON_PUBLIC_BASE_URL", "https://alerts.example.go.kr")
    assert Settings(secret_key=TEST_SECRET).public_base_url == "https://alerts.example.go.kr"


def test_the_shipped_config_leaves_the_url_to_host_and_port(monkeypatch):
    monkeypatch.delenv("ANJEON_CONFIG", raising=False)
    monkeypatch.delenv("ANJEON_PUBLIC_BASE_URL", raising=False)
    monkeypatch.setenv("ANJEON_PORT", "18731")
    assert Settings(secret_key=TEST_SECRET).public_base_url == "http://127.0.0.1:18731"
