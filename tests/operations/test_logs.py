"""Both log formats carry the fields passed in `extra=`: the console notifier's alert text above
all, since it is the only place a developer sees what a citizen would receive."""

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from service.dispatch.notifiers.base import OutgoingMessage, Sent
from service.dispatch.notifiers.console import ConsoleNotifier
from service.logs import TextFormatter, configure_logging

BODY = (
    "[외교부] 도쿄 여행자제 (2단계)\n지진 피해 지역 방문을 자제하십시오.\n\nDetails: http://x/a/1"
)


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[object]:
    """configure_logging as `anjeon serve` calls it, writing to the captured stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def configure(fmt: str) -> None:
        configure_logging(fmt=fmt, level="INFO")

    yield configure
    root.handlers[:], level = saved
    root.setLevel(level)


def email(alert_id: int = 7) -> OutgoingMessage:
    return OutgoingMessage(
        alert_id=alert_id,
        channel="email",
        to="jisu@example.com",
        text=BODY,
        reference=f"ref-{alert_id}",
        subject="도쿄 여행자제",
    )


def test_text_format_shows_the_console_notifiers_alert(configured, capsys):
    configured("text")
    assert isinstance(ConsoleNotifier().send(email()), Sent)
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert first.endswith(
        "INFO anjeon.notifier.console alert (console notifier) alert_id=7 channel=email "
        'subject="도쿄 여행자제"'
    )
    assert rest == [
        "  text:",
        "    | [외교부] 도쿄 여행자제 (2단계)",
        "    | 지진 피해 지역 방문을 자제하십시오.",
        "    |",
        "    | Details: http://x/a/1",
    ]
    assert "jisu@example.com" not in err


def test_json_format_shows_the_console_notifiers_alert(configured, capsys):
    configured("json")
    sms = OutgoingMessage(alert_id=8, channel="sms", to="+821012345678", text=BODY, reference="r")
    ConsoleNotifier().send(sms)
    line = json.loads(capsys.readouterr().err)
    assert line["msg"] == "alert (console notifier)" and line["alert_id"] == 8
    assert line["text"] == BODY and "subject" not in line
    assert "+821012345678" not in json.dumps(line)


def test_text_format_quotes_only_what_needs_it_and_keeps_the_traceback_last():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "anjeon.x", logging.ERROR, "f", 1, "failed", None, sys.exc_info()
        )
    for key, value in {"job": "sweep", "ms": 12.5, "reason": "a b", "empty": "", "n": None}.items():
        setattr(record, key, value)
    text = TextFormatter().format(record)
    first, *rest = text.splitlines()
    assert first.endswith('failed job=sweep ms=12.5 reason="a b" empty="" n=None')
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"
