"""Structured logs: one JSON object a line, or readable text for a terminal. Personal data never
goes into a log record; the registry logs ids, never contacts."""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from service.privacy import scrub_contacts

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI copy of msg
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed in `extra=`, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def scrubbed_exception(text: str) -> str:
    """A formatted exception with phone numbers and e-mail addresses taken out of its messages:
    a provider's or a plugin's exception may quote the address it failed on (a privacy
    review), and a log line outlives an erasure. The "File …" lines are kept as they are."""
    return "\n".join(
        line if line.startswith('  File "') else (scrub_contacts(line) or line)
        for line in text.splitlines()
    )


class JsonFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return scrubbed_exception(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One line with the message and its fields as key=value; a value of several lines (an
    alert's body) follows on its own lines, indented, so it reads as the citizen will see it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatException(self, ei: Any) -> str:
        return scrubbed_exception(super().formatException(ei))

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        blocks = []
        for key, value in extra_fields(record).items():
            shown = value if isinstance(value, str) else str(value)
            if "\n" in shown:
                body = "\n".join(f"    | {part}".rstrip() for part in shown.splitlines())
                blocks.append(f"  {key}:\n{body}")
            else:
                line += f" {key}={_quoted(shown)}"
        return "\n".join([line, *blocks])


def _quoted(value: str) -> str:
    # Quote only what would otherwise blur where a value ends.
    if value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


def configure_logging(*, fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would duplicate ours (and print query strings).
    logging.getLogger("uvicorn.access").disabled = True
    # Two lines per job run (dispatch runs every few seconds); our jobs log their own results.
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    # "Adding job tentatively" once per job at every start; a skipped run is still a WARNING.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
    # The Twilio SDK logs 11 INFO lines per message (request line, each header, status, response
    # headers), 11 of the 12 log lines of a registration; the request line names the account.
    # Our notifiers log what matters of each outcome themselves.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    # httpx logs each request's whole URL at INFO: a duty or staff webhook's URL is often a
    # chat bridge's, with its credential in the path or query.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # urllib3 (under the twilio SDK and geopy) logs each request line at DEBUG: a look-up of
    # a message lists by `To=+82…` in its query (a privacy review).
    logging.getLogger("urllib3").setLevel(logging.WARNING)
