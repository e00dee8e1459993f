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

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConsoleNotifier":
        return cls()

    def send(self, message: OutgoingMessage) -> Outcome:
        # No address: a log line never carries a contact. The text is public advisory content.
        fields: dict[str, object] = {"alert_id": message.alert_id, "channel": message.channel}
        if message.subject:
            fields["subject"] = message.subject
        fields["text"] = message.text
        log.info("alert (console notifier)", extra=fields)
        return Sent(provider_ref=f"console-{message.alert_id}")
