"""The docs hold up: the README stays a door (≤ 10 KB), every relative link and anchor resolves,
the settings table matches Settings and config/default.toml, the packaging files say what the
docs say, and the walkthrough's example files produce the alerts it promises."""

import json
import os
import re
import subprocess
import sys
import tomllib
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.cli import build_parser
from service.config import PROJECT_ROOT, Settings
from service.demo import load_demo_citizens
from tests.loopback_server import serve_in_thread

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
import config_table

ROOT = PROJECT_ROOT
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXPECTED_PAGES = {
    "configuration",
    "api",
    "feeds",
    "geomatching",
    "dispatch",
    "operations",
    "privacy",
    "benchmarks",
    "decisions",
    "checkin",
}
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def test_readme_is_a_door_not_the_house():
    assert README.stat().st_size <= 10_240
    assert {p.stem for p in PAGES if p.parent.name == "docs"} >= EXPECTED_PAGES


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text()))


def test_slug_follows_github():
    assert _slug("The `anjeon` command") == "the-anjeon-command"
    assert _slug("Compose: PostGIS, the API and a dispatch worker") == (
        "compose-postgis-the-api-and-a-dispatch-worker"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    links = _links(page)
    for link in links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, f"{page.name}:\n" + "\n".join(broken)
    if page != README:
        return
    assert {Path(link).stem for link in links if link.startswith("docs/")} >= EXPECTED_PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_stand_alone(page: Path):
    text = page.read_text()
    assert "DESIGN.md" not in text
    # The folder beside a developer's checkout, which a user's clone never has.
    beside = ("../" + "shared", "shared/" + "data")
    assert not any(path in text for path in beside)


# ---- settings: one home for defaults -------------------------------------------------------


def _toml() -> dict:
    return tomllib.loads((ROOT / "config" / "default.toml").read_text())


def _as_in_settings(name: str, value: object) -> object:
    # Settings keeps feeds_file absolute; the file's relative path is read from the project root
    # (Settings.feeds_path), which is the same file.
    if name == "feeds_file" and isinstance(value, str) and not Path(value).is_absolute():
        return str(ROOT / value)
    return value


def test_every_setting_has_its_default_in_default_toml():
    values, secrets = _toml(), set(config_table.secret_fields())
    differ = []
    for name, info in Settings.model_fields.items():
        if name in secrets:
            continue
        if name not in values:
            differ.append(f"{name}: missing from config/default.toml (Settings: {info.default!r})")
            continue
        value = _as_in_settings(name, values[name])
        if value != info.default or type(value) is not type(info.default):
            differ.append(f"{name}: default.toml {values[name]!r}, Settings {info.default!r}")
    assert not differ, "config/default.toml and service/config.py disagree:\n" + "\n".join(differ)
    assert set(values) <= set(Settings.model_fields), "keys Settings does not know"


def test_secrets_are_named_in_default_toml_but_never_set_there():
    secrets = config_table.secret_fields()
    assert {"secret_key", "twilio_auth_token", "smtp_password"} <= set(secrets)
    assert not set(secrets) & set(_toml())
    table = config_table.render()
    for secret in secrets:
        assert table.count(f"`ANJEON_{secret.upper()}` = ") == 1, secret


def test_configuration_doc_holds_the_generated_table():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert config_table.render() in doc, (
        "docs/configuration.md is stale: run .venv/bin/python scripts/config_table.py --write"
    )
    for name in Settings.model_fields:
        assert f"`ANJEON_{name.upper()}` = " in doc, name


def test_config_table_groups_keys_under_their_comment():
    text = '# Where it listens.\nhost = "h"\nport = 1\n\n# Off | on.\nflag = false\n'
    groups = config_table.groups(text)
    assert [(g.comment, g.keys) for g in groups] == [
        (["Where it listens."], ["host", "port"]),
        (["Off | on."], ["flag"]),
    ]
    rendered = config_table.render(text)
    assert "| `ANJEON_HOST` = `h`<br>`ANJEON_PORT` = `1` | Where it listens. |" in rendered
    assert "| `ANJEON_FLAG` = `false` | Off \\| on. |" in rendered


# ---- packaging: lock, image, compose -------------------------------------------------------


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", line):
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_lock_pins_every_dependency_within_pyproject_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _locked()
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is not in requirements.lock: regenerate it"
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock has {spec.name}=={pins[name]}, pyproject wants {spec}"
        )
    text = (ROOT / "requirements.lock").read_text()
    assert text.count("==") == len(pins)
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n")[-1]):
        if "==" in entry:
            assert "--hash=sha256:" in entry, entry.splitlines()[0]


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_image_installs_from_the_lock_and_declares_health_and_volume():
    lines = _dockerfile()
    assert any("--require-hashes" in line and "requirements.lock" in line for line in lines)
    assert 'VOLUME ["/app/var"]' in lines
    (health,) = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert "/readyz" in health


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_image_healthcheck_command_follows_readyz(status: int, healthy: bool):
    (health,) = [line for line in _dockerfile() if line.startswith("HEALTHCHECK")]
    command = json.loads(health.split(" CMD ", 1)[1])
    assert command[0] == "python"
    handler = type("Handler", (_Ready,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve_in_thread(server)
    try:
        run = subprocess.run(
            [sys.executable, *command[1:]],
            env={"ANJEON_PORT": str(server.server_port)},
            capture_output=True,
            timeout=30,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (run.returncode == 0) is healthy, run.stderr


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


# What an operator exports before `docker compose up` (docs/operations.md).
OPERATOR_ENV = {
    "POSTGRES_PASSWORD": "correct-horse",
    "ANJEON_SECRET_KEY": "k" * 40,
    "ANJEON_PUBLIC_BASE_URL": "https://anjeon.example.go.kr",
    "ANJEON_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "ANJEON_TWILIO_AUTH_TOKEN": "t" * 32,
    "ANJEON_TWILIO_FROM": "+15005550006",
    "ANJEON_SMTP_HOST": "smtp.example.go.kr",
    "ANJEON_SMTP_FROM": "alerts@example.go.kr",
    "ANJEON_SMTP_STARTTLS": "true",
    "ANJEON_DUTY_EMAIL": '["duty@example.go.kr"]',
}


def _container_env(service: dict, shell: dict[str, str]) -> dict[str, str]:
    """The service's environment as compose resolves it: ${X:?msg} must be set, ${X:-d} falls
    back to d, and a bare name is passed on from the shell only when set there."""

    def value(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if shell.get(name):
            return shell[name]
        if op == "?":
            raise KeyError(arg)
        return arg or ""

    env = {}
    for entry in service["environment"]:
        name, has_value, raw = entry.partition("=")
        if has_value:
            env[name] = re.sub(r"\$\{(\w+)(?::([?-])([^}]*))?\}", value, raw)
        elif name in shell:
            env[name] = shell[name]
    return env


def _image_env() -> dict[str, str]:
    (line,) = [line for line in _dockerfile() if line.startswith("ENV ")]
    return dict(pair.split("=", 1) for pair in line.split()[1:])


def test_compose_passes_on_what_the_operations_docs_tell_an_operator_to_set():
    """An operator's review: ANJEON_TRUSTED_PROXIES (every production deployment is behind a
    proxy) and the data secrets of a rotation, exported as the docs say, never reached the
    containers."""
    passed = {entry.split("=")[0] for entry in _compose()["x-anjeon"]["environment"]}
    told = {
        "ANJEON_TRUSTED_PROXIES",
        "ANJEON_DATA_KEYS",
        "ANJEON_DATA_KEYS_FILE",
        "ANJEON_DATABASE_POOL_SIZE",
        "ANJEON_DATABASE_MAX_OVERFLOW",
        "ANJEON_RATE_LIMIT_STORAGE",
        "ANJEON_SCHEDULER_ENABLED",
        "ANJEON_CONFIG",
    }
    assert told <= passed, sorted(told - passed)
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert all(name in operations for name in told - {"ANJEON_DATA_KEYS_FILE"})


def test_compose_runs_postgis_the_api_and_a_dispatch_worker():
    services = _compose()["services"]
    assert {"postgis", "api", "worker"} <= set(services)
    assert services["postgis"]["image"].startswith("postgis/postgis:")
    api, worker = services["api"], services["worker"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["postgis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    # The commands are real `anjeon` commands.
    assert worker["command"] == ["anjeon", "dispatch"]
    build_parser().parse_args(worker["command"][1:])
    for step in api["command"][-1].replace("exec ", "").split("&&"):
        words = step.split()
        assert words[0] == "anjeon"
        build_parser().parse_args(words[1:])


@pytest.mark.parametrize("name", ["api", "worker"])
def test_compose_environment_passes_the_production_checks(name, monkeypatch):
    service = _compose()["services"][name]
    env = {**_image_env(), **_container_env(service, OPERATOR_ENV)}
    assert env["ANJEON_ENVIRONMENT"] == "production"
    assert "@postgis:5432/" in env["ANJEON_DATABASE_URL"]
    for key in [k for k in os.environ if k.startswith("ANJEON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises when production would refuse to start
    assert settings.sms_notifier == "twilio" and settings.email_notifier == "smtp"
    assert settings.public_base_url == OPERATOR_ENV["ANJEON_PUBLIC_BASE_URL"]
    with pytest.raises(KeyError, match="ANJEON_PUBLIC_BASE_URL"):
        _container_env(service, {**OPERATOR_ENV, "ANJEON_PUBLIC_BASE_URL": ""})


# ---- the walkthrough's examples ------------------------------------------------------------


def test_walkthrough_examples_alert_the_demo_citizens(client, db, staff_headers):
    load_demo_citizens(db, registry=client.app.state.registry)
    consul = staff_headers("consul")

    cap = (ROOT / "examples" / "tokyo-earthquake.cap.xml").read_bytes()
    answer = client.post(
        "/v1/advisories/import",
        content=cap,
        headers={**consul, "Content-Type": "application/cap+xml"},
    )
    assert answer.status_code == 201, answer.text
    (advisory,) = answer.json()["advisories"]
    assert advisory["status"] == "active" and advisory["expires"].startswith("2099-")
    alerts = client.get(f"/v1/advisories/{advisory['id']}/alerts", headers=consul).json()
    assert alerts["total"] == 1  # 김민준, in Tokyo, by SMS
    assert [a["channel"] for a in alerts["items"]] == ["sms"]
    again = client.post(
        "/v1/advisories/import",
        content=cap,
        headers={**consul, "Content-Type": "application/cap+xml"},
    )
    assert again.status_code == 200

    body = json.loads((ROOT / "examples" / "bangkok-advisory.json").read_text())
    answer = client.post("/v1/advisories", json=body, headers=consul)
    assert answer.status_code == 201, answer.text
    # Named, so its SMS and page say "central Bangkok", not "the marked area" (a newcomer's).
    assert "방콕 도심" in json.dumps(answer.json(), ensure_ascii=False)
    alerts = client.get(f"/v1/advisories/{answer.json()['id']}/alerts", headers=consul).json()
    assert sorted(a["channel"] for a in alerts["items"]) == ["email", "sms"]  # 이서연
