"""The default notifier: writes each alert to the log instead of sending it."""

import logging
from typing import ClassVar

from service.config import Settings
from service.dispatch.notifiers.base import Notifier, Outcome, OutgoingMessage, Sent

log = logging.getLogger("anjeon.notifier.console")


class ConsoleNotifier(Notifier):
    """Prints alerts to the log: for development, and until Twilio or SMTP is configured."""

    name: ClassVar[str] = "console"
    channels: ClassVar[tuple[str, ...]] = ("sms", "email")

    def __init__(self, *, shows_text: bool = True) -> None:
        self.shows_text = shows_text

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConsoleNotifier":
        # In production (ANJEON_ALLOW_CONSOLE_NOTIFIER) a message's text stays out of the log:
        # a code lets its reader verify a stranger's number, a duty notice names a citizen in
        # need and where they are, an alert carries its reader's check-in link.
        return cls(shows_text=settings.environment != "production")

    def send(self, message: OutgoingMessage) -> Outcome:
        # No address: a log line never carries a contact.
        fields: dict[str, object] = {"alert_id": message.alert_id, "channel": message.channel}
        if self.shows_text:
            if message.subject:
                fields["subject"] = message.subject
            fields["text"] = message.text
        else:
            fields["characters"] = len(message.text)
        log.info("alert (console notifier)", extra=fields)
        return Sent(provider_ref=f"console-{message.alert_id}")
