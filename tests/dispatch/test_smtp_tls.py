"""SMTP AUTH only over TLS: a login over a plain connection stops start-up unless
ANJEON_SMTP_ALLOW_PLAIN_AUTH says so; with STARTTLS the password travels after the handshake.
Against a real aiosmtpd on loopback that verifies the login."""

from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from service.app import create_app
from service.config import Settings
from service.dispatch.notifiers.base import NotifierConfigError, OutgoingMessage, Sent
from service.dispatch.notifiers.registry import build_notifiers
from service.dispatch.notifiers.smtp_email import SmtpNotifier
from tests.conftest import TEST_SECRET, make_settings
from tests.dispatch.smtp_sink import SmtpSink, free_port
from tests.tls_certs import make_certificates

RELAY = {
    "email_notifier": "smtp",
    "smtp_host": "127.0.0.1",
    "smtp_from": "alerts@anjeon.test",
    "smtp_username": "relay-user",
    "smtp_password": "relay-password",
}


def settings(**values) -> Settings:
    return Settings(database_url="sqlite://", secret_key=TEST_SECRET, **{**RELAY, **values})


@pytest.mark.parametrize(
    ("values", "describes"),
    [
        ({"smtp_starttls": True}, "starttls, user relay-user"),
        ({"smtp_ssl": True, "smtp_port": 465}, "tls, user relay-user"),
        ({"smtp_allow_plain_auth": True}, "plain, user relay-user"),
        ({"smtp_username": "", "smtp_password": None}, "plain, from"),  # no login: no password
    ],
)
def test_setups_that_start(values, describes):
    notifier = build_notifiers(settings(**values))["email"]
    assert describes in notifier.describe()


def test_login_over_a_plain_connection_stops_start_up(database_url):
    with pytest.raises(NotifierConfigError, match="in clear") as refused:
        build_notifiers(settings())
    message = str(refused.value)
    assert "ANJEON_SMTP_STARTTLS" in message and "ANJEON_SMTP_ALLOW_PLAIN_AUTH" in message
    # The service itself refuses to start with it.
    with pytest.raises(NotifierConfigError, match="in clear"):
        create_app(make_settings(database_url, **RELAY))


def test_the_allowance_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANJEON_SMTP_ALLOW_PLAIN_AUTH", "true")
    assert build_notifiers(settings())["email"].name == "smtp"
    monkeypatch.setenv("ANJEON_SMTP_ALLOW_PLAIN_AUTH", "false")
    with pytest.raises(NotifierConfigError, match="in clear"):
        build_notifiers(settings())


class Relay(SmtpSink):
    """The recording sink, with a login check that notes whether the session was encrypted."""

    logins: list[tuple[str, bytes, bool]]

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((mechanism, auth_data.login, session.ssl is not None))
        good = (auth_data.login, auth_data.password) == (b"relay-user", b"relay-password")
        return AuthResult(success=good)


def _start(**smtp_parameters) -> Relay:
    relay = Relay()
    relay.logins = []
    relay.controller = Controller(
        relay,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=relay.authenticate,
        auth_required=True,
        **smtp_parameters,
    )
    relay.controller.start()
    return relay


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.stop()


def _mail(to: str) -> OutgoingMessage:
    return OutgoingMessage(
        alert_id=7, channel="email", to=to, text="경보", subject="경보", reference="7.abc"
    )


def test_starttls_login_sends_the_password_only_inside_tls(relays, tmp_path, monkeypatch):
    certificates = make_certificates(tmp_path, "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))  # the client's trust store
    relay = _start(tls_context=certificates.server_context(), require_starttls=True)
    relays.append(relay)
    notifier = SmtpNotifier.from_settings(
        settings(smtp_port=relay.port, smtp_starttls=True, smtp_timeout_s=5)
    )
    try:
        outcome = notifier.send(_mail("consul@example.com"))
    finally:
        notifier.close()
    assert isinstance(outcome, Sent), outcome
    assert [mechanism for mechanism, _, _ in relay.logins]
    assert all(login == b"relay-user" and encrypted for _, login, encrypted in relay.logins)
    assert [m["To"] for m in relay.received] == ["consul@example.com"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the point here
def test_a_plain_login_works_when_explicitly_allowed(relays):
    relay = _start(auth_require_tls=False)
    relays.append(relay)
    notifier = SmtpNotifier.from_settings(
        settings(smtp_port=relay.port, smtp_allow_plain_auth=True, smtp_timeout_s=5)
    )
    try:
        outcome = notifier.send(_mail("consul@example.com"))
    finally:
        notifier.close()
    assert isinstance(outcome, Sent), outcome
    assert [(login, encrypted) for _, login, encrypted in relay.logins] == [(b"relay-user", False)]
    assert len(relay.received) == 1
