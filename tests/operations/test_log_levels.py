"""Loggers of libraries that write a line per request are quieted by configure_logging: the
Twilio SDK wrote 11 INFO lines for every SMS, 11 of the 12 lines of a registration, and httpx
the whole URL of every webhook it posted (found by a privacy review)."""

import logging
import sys
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service.db import make_engine
from service.logs import JsonFormatter, TextFormatter, configure_logging


@pytest.fixture
def configured() -> Iterator[Callable[..., None]]:
    """configure_logging, with the root logger's handlers and level put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield configure_logging
    root.handlers[:], level = saved
    root.setLevel(level)


def test_the_twilio_sdk_writes_no_info_lines(configured):
    configured(fmt="json", level="INFO")
    assert not logging.getLogger("twilio.http_client").isEnabledFor(logging.INFO)
    assert logging.getLogger("twilio.http_client").isEnabledFor(logging.WARNING)
    assert logging.getLogger("anjeon.citizens.messages").isEnabledFor(logging.INFO)
    # httpx wrote each request's whole URL: a duty webhook's holds its credential.
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)


def test_at_debug_no_request_line_of_urllib3_is_written(configured):
    """A privacy review: at ANJEON_LOG_LEVEL=DEBUG urllib3 wrote each request line, and a
    message's look-up lists by `To=+82…` in its query."""
    configured(fmt="json", level="DEBUG")
    assert logging.getLogger("anjeon.citizens.messages").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.WARNING)


def test_a_database_error_logged_names_no_values():
    """A privacy review: the engines showed a failed statement's values (places, reasons)."""
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection, pytest.raises(OperationalError) as caught:
            connection.execute(text("select * from nowhere where x = :x"), {"x": "Q-secret"})
        assert "Q-secret" not in str(caught.value) and "hidden" in str(caught.value)
    finally:
        engine.dispose()


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_an_exception_logged_keeps_no_contact_it_quotes(formatter):
    """A privacy review: a notifier's or a plugin's exception may quote the address it failed
    on ("refused for 'To' +82…"), and `log.exception` wrote it whole."""
    try:
        raise RuntimeError("refused for 'To' +821012345678 and jiho.park@example.com")
    except RuntimeError:
        record = logging.getLogger("anjeon.test").makeRecord(
            "anjeon.test", logging.ERROR, __file__, 1, "notifier raised", (), sys.exc_info()
        )
    line = formatter.format(record)
    assert "1012345678" not in line and "example.com" not in line
    assert "[contact]" in line and "File " in line and "RuntimeError: refused for" in line
