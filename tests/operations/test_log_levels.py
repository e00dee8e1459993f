"""Loggers of libraries that write a line per request are quieted by configure_logging: the
Twilio SDK wrote 11 INFO lines for every SMS, 11 of the 12 lines of a registration, and httpx
the whole URL of every webhook it posted (found by a privacy review)."""

import logging

from service.logs import configure_logging


def test_the_twilio_sdk_writes_no_info_lines():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(fmt="json", level="INFO")
        assert not logging.getLogger("twilio.http_client").isEnabledFor(logging.INFO)
        assert logging.getLogger("twilio.http_client").isEnabledFor(logging.WARNING)
        assert logging.getLogger("anjeon.citizens.messages").isEnabledFor(logging.INFO)
        # httpx wrote each request's whole URL: a duty webhook's holds its credential.
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
