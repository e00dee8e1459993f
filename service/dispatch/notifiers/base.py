"""The notifier contract: a typed message in, a typed outcome out. A notifier classifies
provider failures (retry or give up) instead of raising them; the dispatcher owns retries,
backoff, fallback and deduplication."""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pydantic import SecretStr


@dataclass(frozen=True)
class OutgoingMessage:
    alert_id: int
    channel: str  # "sms" | "email"
    to: str
    text: str
    reference: str  # unique per alert; carried in the message so a send can be found again
    subject: str = ""
    # The same reference as an earlier data secret signed it (a check-in token during a key
    # rotation): a send from before the rotation carries that one, and a look-up must find it.
    earlier_references: tuple[str, ...] = ()
    # What a receiver drops a repeat by (a webhook's Idempotency-Key): the alert's reference,
    # which no rotation changes; empty: `reference`.
    idempotency_key: str = ""
    html: str = ""
    segments: int | None = None
    # The advisory's end: a provider may drop the message if it is still queued then.
    valid_until: datetime | None = None
    status_callback: str | None = None


@dataclass(frozen=True)
class Sent:
    provider_ref: str = ""


@dataclass(frozen=True)
class Retry:
    reason: str
    code: str = ""
    retry_after_s: float | None = None
    # True when the request may have reached the provider (a timeout after sending, a 5xx):
    # the dispatcher must look the message up before sending again.
    outcome_unknown: bool = False
    # The provider's queue for this sender is full (Twilio 21611): nothing was sent, and the
    # dispatcher holds the sender for every process; the alert keeps its tries.
    queue_full: bool = False
    # The connection closed before any answer came. Most often a kept-alive connection that
    # the provider closed as idle just as the request went out (a race every HTTP client
    # meets now and then, about once in 2,500 codes in the load benchmark); the request may
    # still have been taken, so it counts as outcome_unknown too.
    unanswered: bool = False


@dataclass(frozen=True)
class Failed:
    reason: str
    code: str = ""
    # The provider refused the address because it opted out there (an SMS STOP that reached the
    # provider and not us: Twilio 21610): kept as the number's STOP.
    opted_out: bool = False


Outcome = Sent | Retry | Failed


@dataclass(frozen=True)
class DeliveryReport:
    """A provider's word on one message it accepted, read from its webhook. `status` is one of
    "sent" (still on its way), "delivered" or "undelivered"."""

    provider_ref: str
    status: str
    error_code: str | None = None
    detail: str = ""
    # The provider dropped the message unsent because its queue overflowed (Twilio 30001):
    # the alert is sent again, with its tries kept, and the sender is held.
    queue_overflow: bool = False


REPORT_STATUSES = ("sent", "delivered", "undelivered")


@dataclass(frozen=True)
class InboundMessage:
    """A message a citizen sent us (an SMS reply), as the provider reported it."""

    sender: str  # E.164
    body: str
    provider_ref: str


class ReportRejected(Exception):
    """A webhook request that is not a genuine report from this provider (answered 403)."""


class NotifierConfigError(ValueError):
    """A notifier cannot be built from the settings given: start-up stops."""


@dataclass(frozen=True)
class Lookup:
    """What reconciling found: the earlier send (found), nothing (safe to send), or that the
    notifier cannot tell (then at most one duplicate is possible)."""

    found: Sent | None = None
    supported: bool = True
    error: str = ""


def revealed(secret: SecretStr | None) -> str:
    """A secret setting's value, or "" when it is unset."""
    return secret.get_secret_value() if secret is not None else ""


class Notifier(ABC):
    """Base class of every notifier. Subclasses declare their limits as class attributes."""

    name: ClassVar[str] = ""
    channels: ClassVar[tuple[str, ...]] = ()
    # A plugin's own settings (a pydantic-settings model with its own env_prefix); when set,
    # from_settings(settings, own_settings) receives it read and validated.
    settings_model: ClassVar[type | None] = None
    # What this notifier's sender may send per second, all processes together, counted in
    # segments for SMS (a 3-segment SMS spends 3) and in messages otherwise; None: no limit.
    max_per_second: float | None = None
    # How long after a try whose outcome is unknown the provider may still act on it: the
    # look-up before a resend waits this long, or a send the provider makes late is missed and
    # made twice. 0 for a notifier that cannot look up (the one resend goes at once).
    settle_s: float = 0.0

    @abstractmethod
    def send(self, message: OutgoingMessage) -> Outcome:
        """Send one message; classify the provider's answer instead of raising it."""

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> Lookup:
        """Find a send of this message made since `since` whose outcome we never learnt."""
        return Lookup(supported=False)

    def read_report(
        self, *, url: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> DeliveryReport | None:
        """Check and read a delivery report POSTed to /v1/webhooks/{name}/status (`url` is the
        public URL it was sent to); None when it says nothing we record. Raise ReportRejected
        for anything not provably from the provider. By default a notifier takes no reports."""
        raise ReportRejected(f"the {self.name} notifier takes no delivery reports")

    def read_inbound(
        self, *, url: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> InboundMessage:
        """Check and read a citizen's message POSTed to /v1/webhooks/{name}/inbound; raise
        ReportRejected for anything not provably from the provider. By default none is taken."""
        raise ReportRejected(f"the {self.name} notifier takes no inbound messages")

    def describe(self) -> str:
        """One line for logs; never a secret."""
        return self.name

    def sender_key(self) -> str:
        """What max_per_second is the rate of (a From number, a relay): processes sending as
        the same sender share it."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional: most notifiers hold nothing open
        """Release connections (called when the dispatcher stops)."""
