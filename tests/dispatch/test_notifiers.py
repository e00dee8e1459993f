"""The notifier contract, one table per notifier against real servers on loopback:
(scenario, what the server answers, expected outcome). Then discovery and configuration."""

import hashlib
import hmac
import importlib
import json
import sys
import textwrap
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.config import Settings
from service.dispatch.notifiers import twilio_sms
from service.dispatch.notifiers.base import (
    Failed,
    NotifierConfigError,
    OutgoingMessage,
    Retry,
    Sent,
)
from service.dispatch.notifiers.registry import build_notifiers
from service.dispatch.notifiers.smtp_email import SmtpNotifier
from service.dispatch.notifiers.twilio_sms import TwilioNotifier
from service.dispatch.notifiers.webhook import SIGNATURE_HEADER, WebhookNotifier
from service.send_window import SendWindowClosed, send_window
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import TEST_SECRET
from tests.dispatch.conftest import dispatcher_in
from tests.dispatch.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, Answer
from tests.dispatch.smtp_sink import free_port
from tests.loopback_server import serve_in_thread


def message(to: str, channel: str = "sms", alert_id: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        alert_id=alert_id,
        channel=channel,
        to=to,
        text=f"테스트 경보 https://anjeon.test/a/{alert_id}.abc",
        subject="테스트",
        reference=f"{alert_id}.abc",
    )


STALLED_S = 6.0  # well past the stalled case's timeout (1 s)


def twilio_notifier(base: str, timeout_s: float = 2.0) -> TwilioNotifier:
    return TwilioNotifier(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        sender="+15005550006",
        api_base=base,
        timeout_s=timeout_s,
    )


@pytest.mark.parametrize(
    ("scenario", "answer", "expected"),
    [
        ("accepted", Answer(201), Sent),
        ("invalid number", Answer(400, code=21211), Failed(reason="", code="21211")),
        ("not a mobile", Answer(400, code=21614), Failed(reason="", code="21614")),
        ("region off", Answer(400, code=21408), Failed(reason="", code="21408")),
        ("unsubscribed", Answer(400, code=21610), Failed("", code="21610", opted_out=True)),
        ("rate limited", Answer(429, code=20429, retry_after="2"), Retry("", "20429", 2.0)),
        ("queue full", Answer(400, code=21611), Retry("", "21611", None, queue_full=True)),
        ("server error", Answer(500), Retry("", "500", None, outcome_unknown=True)),
        ("stalled", Answer(stall_s=STALLED_S), Retry("", "", None, outcome_unknown=True)),
    ],
)
def test_twilio_contract(twilio, scenario, answer, expected):
    twilio.script("+821012340000", answer)
    # Only the stall is meant to outlast the timeout: an answer on a busy machine is not.
    timeout_s = 1.0 if scenario == "stalled" else 10.0
    outcome = twilio_notifier(twilio.url, timeout_s=timeout_s).send(message("+821012340000"))
    if expected is Sent:
        assert isinstance(outcome, Sent) and outcome.provider_ref == twilio.messages[0]["sid"]
        return
    assert type(outcome) is type(expected), outcome
    assert outcome.code == expected.code
    if isinstance(expected, Failed):
        assert outcome.opted_out == expected.opted_out  # kept as the number's STOP
    if isinstance(expected, Retry):
        assert outcome.retry_after_s == expected.retry_after_s
        assert outcome.outcome_unknown == expected.outcome_unknown
        assert outcome.queue_full == expected.queue_full


def test_twilio_unreachable_is_a_safe_retry():
    outcome = twilio_notifier(f"http://127.0.0.1:{free_port()}").send(message("+821012340000"))
    assert isinstance(outcome, Retry)


def test_twilio_lookup_finds_only_our_reference(twilio):
    notifier = twilio_notifier(twilio.url)
    notifier.send(message("+821012340001", alert_id=7))
    found = notifier.lookup(message("+821012340001", alert_id=7), since=datetime.now(UTC))
    assert found.found == Sent(provider_ref=twilio.messages[0]["sid"])
    other = notifier.lookup(message("+821012340001", alert_id=8), since=datetime.now(UTC))
    assert other.found is None and other.supported and not other.error


def test_twilio_lookup_finds_a_send_signed_before_a_key_rotation(twilio):
    """A check-in SMS carries its token as the reference; a rotation of the data secret signs
    the same token anew, so the look-up of a send from before it asks for the old one too."""
    notifier = twilio_notifier(twilio.url)
    sent = replace(message("+821012340003", alert_id=9), reference="OLDTOKEN")
    notifier.send(replace(sent, text=sent.text + " https://anjeon.test/c/OLDTOKEN"))
    now = datetime.now(UTC)
    resent = replace(sent, reference="NEWTOKEN")
    assert notifier.lookup(resent, since=now).found is None
    found = notifier.lookup(replace(resent, earlier_references=("OLDTOKEN",)), since=now)
    assert found.found == Sent(provider_ref=twilio.messages[0]["sid"])


def test_twilio_messaging_service_and_validity(twilio):
    notifier = TwilioNotifier(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        messaging_service_sid="MG" + "1" * 32,
        api_base=twilio.url,
        validity_period_s=600,
    )
    notifier.send(message("+821012340002"))
    [post] = twilio.posts
    assert post["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in post
    assert post["ValidityPeriod"] == "600"
    assert AUTH_TOKEN not in notifier.describe()


def smtp_notifier(port: int) -> SmtpNotifier:
    return SmtpNotifier(host="127.0.0.1", port=port, sender="alerts@anjeon.test", timeout_s=2)


@pytest.mark.parametrize(
    ("scenario", "reply", "expected"),
    [
        ("accepted", None, Sent),
        ("greylisted", "451 4.7.1 greylisted", Retry),
        ("mailbox full", "452 4.2.2 over quota", Retry),
        ("no such user", "550 5.1.1 unknown", Failed),
        ("policy", "554 5.7.1 rejected", Failed),
    ],
)
def test_smtp_contract(smtp, scenario, reply, expected):
    if reply:
        smtp.script("x@example.com", reply)
    outcome = smtp_notifier(smtp.port).send(message("x@example.com", "email"))
    assert isinstance(outcome, expected)
    if reply:
        assert outcome.code == reply[:3]
    else:
        [mail] = smtp.received
        assert mail["Message-ID"] == "<1.abc@anjeon.test>"


def test_smtp_server_down_is_retried():
    outcome = smtp_notifier(free_port()).send(message("x@example.com", "email"))
    assert isinstance(outcome, Retry)


def test_smtp_sends_again_after_its_connection_is_closed(smtp):
    notifier = smtp_notifier(smtp.port)
    for n in range(3):
        assert isinstance(notifier.send(message(f"r{n}@example.com", "email", n)), Sent)
    notifier.close()  # quits the connection: the next send must reconnect by itself
    assert isinstance(notifier.send(message("r3@example.com", "email", 3)), Sent)
    assert [m["To"] for m in smtp.received] == [f"r{n}@example.com" for n in range(4)]


@pytest.mark.parametrize(
    ("at", "every_s", "timeout_s", "cut_at"),
    [
        ("data", 0.5, 2.0, "250 Mes"),
        ("data", 2.5, 3.0, "25"),
        ("rcpt", 2.5, 3.0, "25"),
        ("connect", 2.5, 3.0, "22"),
    ],
    ids=["code-in", "cut-mid-code", "cut-before-data", "cut-greeting"],
)
def test_a_relay_whose_reply_trickles_in_is_cut_at_twice_the_timeout(
    smtp, at, every_s, timeout_s, cut_at
):
    """The relay keeps the message, then sends its "250 ..." a byte every `every_s` (17 s or
    more in all). No read waits as long as the timeout, so before, the e-mail lane waited all
    of it; now the try is cut at twice the timeout. If the reply's code had arrived by then,
    the relay took it: sent. If the cut fell inside the code ("25"), the relay may have it: an
    unknown outcome, not a refusal of code 25. Cut inside RCPT's reply or the greeting, nothing
    was sent: a plain retry, not a refusal either. The next send goes on a new connection."""
    fault = smtp.fault("trickle", at=at, count=1, stall_s=every_s)
    notifier = SmtpNotifier(
        host="127.0.0.1", port=smtp.port, sender="alerts@anjeon.test", timeout_s=timeout_s
    )
    started = time.monotonic()
    outcome = notifier.send(message("r1@example.com", "email", 1))
    took = time.monotonic() - started
    if cut_at.startswith("250"):
        assert isinstance(outcome, Sent), outcome
    else:
        assert isinstance(outcome, Retry), outcome
        assert outcome.outcome_unknown == (at == "data"), outcome
        assert not outcome.code, outcome  # not read as a relay's code
    assert took < 2 * timeout_s + 4, took  # the reply alone takes 17 s or more
    assert fault.hits == 1
    assert isinstance(notifier.send(message("r2@example.com", "email", 2)), Sent)
    kept = ["r1@example.com"] if at == "data" else []
    assert [m["To"] for m in smtp.received] == [*kept, "r2@example.com"]
    notifier.close()


class WebhookSink:
    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.answers: deque = deque()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.requests.append((dict(self.headers), body))
                status, headers = sink.answers.popleft() if sink.answers else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve_in_thread(self.server)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def hook():
    sink = WebhookSink()
    yield sink
    sink.server.shutdown()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [((200, {}), Sent), ((503, {"Retry-After": "3"}), Retry), ((400, {}), Failed)],
)
def test_webhook_contract_and_signature(hook, answer, expected):
    hook.answers.append(answer)
    notifier = WebhookNotifier(url=hook.url, secret="hook-secret")
    outcome = notifier.send(message("+821012340003"))
    assert isinstance(outcome, expected)
    if expected is Retry:
        assert outcome.retry_after_s == 3
    [(headers, body)] = hook.requests
    expected_signature = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected_signature
    assert json.loads(body)["text"].startswith("테스트 경보")
    notifier.close()


def test_a_webhooks_idempotency_key_is_the_alerts_reference_not_a_check_in_token(hook):
    """A check-in SMS's reference is its token, which a rotation of the data secret signs
    anew: as the Idempotency-Key, a send retried after a rotation reached the receiver as new
    (a review). The key is the alert's reference, which no rotation changes."""
    notifier = WebhookNotifier(url=hook.url, secret="hook-secret")
    asked = replace(message("+821012340006", alert_id=5), reference="TOKEN", idempotency_key="5.ab")
    assert isinstance(notifier.send(asked), Sent)
    assert isinstance(notifier.send(message("+821012340007", alert_id=6)), Sent)
    keys = [headers["Idempotency-Key"] for headers, _ in hook.requests]
    assert keys == ["5.ab", "6.abc"]
    assert json.loads(hook.requests[0][1])["reference"] == "TOKEN"
    notifier.close()


def test_a_webhook_whose_send_window_closed_posts_nothing(hook):
    """The webhook checks the claim's lease again once its request is built (fencing, as
    Twilio and SMTP do below the client): past it, nothing is posted; with it open, or with
    no window (a duty notice), the post goes."""
    notifier = WebhookNotifier(url=hook.url, secret="hook-secret")
    with send_window(lambda: time.monotonic() - 0.001), pytest.raises(SendWindowClosed):
        notifier.send(message("+821012340003"))
    assert hook.requests == []
    with send_window(lambda: time.monotonic() + 30):
        assert isinstance(notifier.send(message("+821012340004")), Sent)
    assert isinstance(notifier.send(message("+821012340005")), Sent)
    assert [json.loads(body)["to"] for _, body in hook.requests] == [
        "+821012340004",
        "+821012340005",
    ]
    notifier.close()


# -- discovery and configuration ------------------------------------------------------------


def settings(**values) -> Settings:
    return Settings(database_url="sqlite://", secret_key=TEST_SECRET, **values)


def plugin_on_path(tmp_path, monkeypatch, *, name: str, target: str, source: str = "") -> None:
    """An installed distribution, as pip would leave it, that is not part of this project."""
    package = tmp_path / "anjeon_pigeon"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    info = tmp_path / "anjeon_pigeon-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: anjeon-pigeon\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[anjeon.notifiers]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # Another test's copy of the plugin module must not stand in for this one.
    monkeypatch.delitem(sys.modules, "anjeon_pigeon", raising=False)
    importlib.invalidate_caches()


PIGEON = """
    from service.dispatch.notifiers.base import Notifier, Sent

    class PigeonNotifier(Notifier):
        name = "pigeon"
        channels = ("sms",)
        sent = []

        @classmethod
        def from_settings(cls, settings):
            return cls()

        def send(self, message):
            PigeonNotifier.sent.append(message)
            return Sent(provider_ref=f"pigeon-{message.alert_id}")
"""


def test_out_of_tree_plugin_is_found_and_used(tmp_path, monkeypatch, api, consul, db):
    plugin_on_path(
        tmp_path, monkeypatch, name="pigeon", target="anjeon_pigeon:PigeonNotifier", source=PIGEON
    )
    configured = settings(sms_notifier="pigeon")
    configured = configured.model_copy(update={"database_url": api.app.state.settings.database_url})
    notifiers = build_notifiers(configured)
    assert type(notifiers["sms"]).__name__ == "PigeonNotifier"
    register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-8888-0001", channels=["sms"])
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    type(notifiers["sms"]).sent.clear()  # the plugin module outlives one backend's run
    dispatcher = dispatcher_in(db, configured)
    tally = dispatcher.drain()
    dispatcher.close()
    assert tally.by_status == {"sent": 1}
    [sent] = type(notifiers["sms"]).sent
    assert sent.to == "+821088880001" and "도쿄 여행자제" in sent.text


def test_plugin_that_fails_to_load_stops_start_up(tmp_path, monkeypatch):
    plugin_on_path(tmp_path, monkeypatch, name="broken", target="anjeon_pigeon:Missing")
    with pytest.raises(NotifierConfigError, match=r"'broken'.*failed to load"):
        build_notifiers(settings())


def test_plugin_may_not_take_a_built_in_name(tmp_path, monkeypatch):
    plugin_on_path(
        tmp_path, monkeypatch, name="twilio", target="anjeon_pigeon:PigeonNotifier", source=PIGEON
    )
    with pytest.raises(NotifierConfigError, match="already taken"):
        build_notifiers(settings())


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"sms_notifier": "carrier-pigeon"}, "not a notifier; known: console, smtp, twilio"),
        ({"sms_notifier": "smtp", "smtp_host": "h", "smtp_from": "a@b.c"}, "cannot send sms"),
        ({"sms_notifier": "twilio"}, "ANJEON_TWILIO_ACCOUNT_SID"),
        (
            {"sms_notifier": "twilio", "twilio_account_sid": "AC1", "twilio_auth_token": "t"},
            "ANJEON_TWILIO_FROM",
        ),
        ({"email_notifier": "smtp"}, "ANJEON_SMTP_HOST"),
        ({"email_notifier": "webhook"}, "ANJEON_WEBHOOK_URL"),
    ],
)
def test_broken_notifier_setup_stops_start_up(values, complaint):
    with pytest.raises(NotifierConfigError, match=complaint):
        build_notifiers(settings(**values))


def test_default_is_the_console_for_both_channels():
    notifiers = build_notifiers(settings())
    assert notifiers["sms"] is notifiers["email"]
    assert notifiers["sms"].name == "console"


TYPED = """
    from pydantic import SecretStr
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from service.dispatch.notifiers.base import Notifier, Sent

    class PigeonSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="ANJEON_PIGEON_")
        token: SecretStr
        loft: str = "seoul"

    class TypedPigeon(Notifier):
        name = "pigeon"
        channels = ("sms",)
        settings_model = PigeonSettings

        def __init__(self, own):
            self.own = own

        @classmethod
        def from_settings(cls, settings, own):
            return cls(own)

        def send(self, message):
            return Sent(provider_ref="p")
"""


def test_plugin_declares_typed_settings_read_from_its_own_prefix(tmp_path, monkeypatch):
    plugin_on_path(
        tmp_path, monkeypatch, name="pigeon", target="anjeon_pigeon:TypedPigeon", source=TYPED
    )
    monkeypatch.delenv("ANJEON_PIGEON_TOKEN", raising=False)
    with pytest.raises(NotifierConfigError, match=r"'pigeon' settings \(ANJEON_PIGEON_\*\).*token"):
        build_notifiers(settings(sms_notifier="pigeon"))
    monkeypatch.setenv("ANJEON_PIGEON_TOKEN", "s3cret")
    monkeypatch.setenv("ANJEON_PIGEON_LOFT", "busan")
    notifier = build_notifiers(settings(sms_notifier="pigeon"))["sms"]
    assert notifier.own.token.get_secret_value() == "s3cret"
    assert notifier.own.loft == "busan"


def test_twilio_lookup_reads_past_the_newest_200_and_never_guesses(twilio, monkeypatch):
    """Found by a review: the look-up read the newest 200 messages to the number, so after
    200 more (a burst, or another app on the account) it answered "not found", and the
    dispatcher sent ours again. It now reads back to the first attempt, and past LOOKUP_MOST
    messages it fails (a try) instead of answering "not found"."""
    notifier = twilio_notifier(twilio.url)
    since = datetime.now(UTC)
    notifier.send(message("+821012340002", alert_id=987654))
    for n in range(250):
        notifier.send(message("+821012340002", alert_id=3_000_000 + n))
    ours = message("+821012340002", alert_id=987654)
    [sid] = [m["sid"] for m in twilio.messages if ours.reference in m["body"]]
    found = notifier.lookup(ours, since=since)
    assert found.found == Sent(provider_ref=sid)
    monkeypatch.setattr(twilio_sms, "LOOKUP_MOST", 100)
    too_many = notifier.lookup(message("+821012340002", alert_id=987654), since=since)
    assert too_many.found is None and "over 100 messages" in too_many.error
