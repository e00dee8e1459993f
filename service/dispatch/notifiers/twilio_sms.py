"""SMS through Twilio's REST API with the official SDK."""

import re
import threading
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from service.config import Settings
from service.dispatch.notifiers.base import (
    DeliveryReport,
    Failed,
    InboundMessage,
    Lookup,
    Notifier,
    NotifierConfigError,
    Outcome,
    OutgoingMessage,
    ReportRejected,
    Retry,
    Sent,
    revealed,
)
from service.provider_wire import BoundedAdapter, bounded

# Twilio error codes that no retry can fix: invalid 'To' number, region not enabled,
# recipient replied STOP, body invalid/too long, not a mobile number, unreachable.
PERMANENT_CODES = frozenset({21211, 21408, 21610, 21614, 21617, 21602, 21612, 30006})
# "Attempt to send to unsubscribed recipient": the number sent STOP to the provider.
UNSUBSCRIBED = 21610
# 20429: too many concurrent requests: slow down.
THROTTLE_CODES = frozenset({20429})
# The sender's queue at Twilio holds up to 10 hours of its rate: 21611 refuses a create for a
# From number whose queue is full; a messaging service accepts it, and it fails later with
# 30001 ("queue overflow", in the status callback). Neither message left Twilio.
QUEUE_FULL = 21611
QUEUE_OVERFLOW = "30001"
# What Twilio names a message: SM (SMS) or MM (MMS) and 32 hex digits. The signature does not
# fix where one field ends ("MessageSid=SM…&NumMedia=0" signs as "MessageSid=SM…NumMedia0"), so
# an id kept to refuse replays must be checked: a probe re-cut a citizen's old "1" into a new
# id and replayed it after their "2 help".
_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")
# Twilio's field names are letters and digits (MediaUrl0). The URL is signed joined to the
# first field's name too: a probe moved "&attempt=1" out of our query into a field name
# ("&attempt=1AccountSid") under the same signature, and settled an alert the report was not
# about.
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")

# Twilio's MessageStatus values, as a delivery report's status.
REPORTED_STATUS = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "undelivered",
    "canceled": "undelivered",
}


class _BoundedTwilioHttpClient(TwilioHttpClient):
    """Each request, its answer read, within `total_s` (provider_wire.py): `timeout` bounds
    each connect and each read alone."""

    def __init__(self, *, total_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total_s = total_s

    def request(self, *args: Any, **kwargs: Any) -> Response:
        with bounded(self.total_s):
            return super().request(*args, **kwargs)


class TwilioNotifier(Notifier):
    """SMS by Twilio: From or a Messaging Service, a StatusCallback to our webhook, and a
    ValidityPeriod so an alert still queued at Twilio when it goes stale is dropped there."""

    name: ClassVar[str] = "twilio"
    channels: ClassVar[tuple[str, ...]] = ("sms",)

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str = "",
        messaging_service_sid: str = "",
        api_base: str = "https://api.twilio.com",
        max_per_second: float | None = 1.0,
        timeout_s: float = 10.0,
        validity_period_s: int = 14_400,
        settle_s: float | None = None,
    ) -> None:
        if not account_sid or not auth_token:
            raise NotifierConfigError(
                "twilio needs ANJEON_TWILIO_ACCOUNT_SID and ANJEON_TWILIO_AUTH_TOKEN"
            )
        if not sender and not messaging_service_sid:
            raise NotifierConfigError(
                "twilio needs ANJEON_TWILIO_FROM or ANJEON_TWILIO_MESSAGING_SERVICE_SID"
            )
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.api_base = api_base.rstrip("/")
        self.max_per_second = max_per_second or None
        self.timeout_s = timeout_s
        # A request we gave up on may still be acted on: as long as we allow a whole exchange.
        self.settle_s = settle_s or 2 * timeout_s
        self.validity_period_s = validity_period_s
        # The SDK's client is not thread-safe (it keeps the last response): one per thread.
        self._local = threading.local()
        self._proxies = {
            scheme: url
            for scheme, url in urllib.request.getproxies().items()
            if scheme in ("http", "https")
            and not urllib.request.proxy_bypass(self.api_base.split("://", 1)[-1].split("/", 1)[0])
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> "TwilioNotifier":
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=revealed(settings.twilio_auth_token),
            sender=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            api_base=settings.twilio_api_base,
            max_per_second=settings.twilio_mps,
            timeout_s=settings.twilio_timeout_s,
            validity_period_s=settings.twilio_validity_period_s,
            settle_s=settings.twilio_settle_s,
        )

    def describe(self) -> str:
        sender = self.sender or f"service {self.messaging_service_sid}"
        return f"twilio ({self.api_base}, account {self.account_sid[:6]}…, from {sender})"

    def sender_key(self) -> str:
        return f"twilio:{self.messaging_service_sid or self.sender}"

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            self._local.retry_after = None

            def remember_retry_after(response: requests.Response, **_: Any) -> None:
                self._local.retry_after = response.headers.get("Retry-After")

            http = _BoundedTwilioHttpClient(
                total_s=2 * self.timeout_s,
                timeout=self.timeout_s,
                request_hooks={"response": remember_retry_after},
                proxy=self._proxies or None,
            )
            # Proxies come from the environment once, above: requests would otherwise scan
            # os.environ on every request (~0.8 ms a message here).
            http.session.trust_env = False
            # Fencing (a send whose claim lapsed meanwhile stops before its first byte) and a
            # bound on each whole request, however slowly the answer trickles in.
            for scheme in ("https://", "http://"):
                http.session.mount(scheme, BoundedAdapter())
            client = Client(self.account_sid, self._auth_token, http_client=http)
            client.api.base_url = self.api_base
            self._local.client = client
        return client

    def send(self, message: OutgoingMessage) -> Outcome:
        params: dict[str, Any] = {"to": message.to, "body": message.text}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.sender
        if message.status_callback:
            params["status_callback"] = message.status_callback
        params["validity_period"] = self._validity(message.valid_until)
        client = self._client()
        self._local.retry_after = None
        try:
            created = client.messages.create(**params)
        except TwilioRestException as exc:
            return self._classify(exc)
        except requests.exceptions.ConnectTimeout as exc:
            return Retry(reason=f"connect timeout: {exc}")
        except requests.exceptions.RequestException as exc:
            # The request may have left: a read timeout, a dropped connection.
            return Retry(
                reason=f"{type(exc).__name__}: {exc}",
                outcome_unknown=True,
                unanswered=_unanswered(exc),
            )
        return Sent(provider_ref=created.sid or "")

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> Lookup:
        """Twilio keeps every message: page back through those to the number (from our sender,
        newest first) until one older than the first attempt, and find ours by the reference
        its text carries. Not filtered on DateSent: a message still in Twilio's queue has none
        yet and would be left out, then sent twice (twilio-java#442). Past LOOKUP_MOST messages
        without reaching `since`, the look-up fails rather than answer "not found" (a resend)."""
        oldest = since - timedelta(minutes=10)  # the clocks of two machines
        sender = {} if self.messaging_service_sid else {"from_": self.sender}
        try:
            listed = self._client().messages.stream(to=message.to, page_size=200, **sender)
            references = (message.reference, *message.earlier_references)
            for seen, earlier in enumerate(listed, start=1):
                if earlier.status not in _NEVER_ARRIVED and any(
                    reference in (earlier.body or "") for reference in references
                ):
                    return Lookup(found=Sent(provider_ref=earlier.sid or ""))
                if earlier.date_created is not None and earlier.date_created < oldest:
                    return Lookup()
                if seen >= LOOKUP_MOST:
                    return Lookup(error=f"lookup failed: over {LOOKUP_MOST} messages to read")
        except (TwilioException, requests.exceptions.RequestException) as exc:
            # TwilioException: a list page answered 5xx is raised as "Unable to fetch page",
            # not as a TwilioRestException.
            return Lookup(error=f"lookup failed: {exc}")
        return Lookup()

    def read_report(
        self, *, url: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> DeliveryReport | None:
        """Twilio signs each callback with the auth token over our public URL and the form."""
        sid = _signed_sid(self._auth_token, url=url, form=form, headers=headers)
        status = REPORTED_STATUS.get(form.get("MessageStatus", ""))
        if status is None:
            return None
        code = form.get("ErrorCode") or None
        detail = f"Twilio reports {form['MessageStatus']}" + (f" (error {code})" if code else "")
        return DeliveryReport(
            provider_ref=sid,
            status=status,
            error_code=code,
            detail=detail,
            queue_overflow=status == "undelivered" and code == QUEUE_OVERFLOW,
        )

    def read_inbound(
        self, *, url: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> InboundMessage:
        """Twilio's incoming-message webhook, signed like the status callback."""
        sid = _signed_sid(self._auth_token, url=url, form=form, headers=headers)
        return InboundMessage(
            sender=form.get("From", ""), body=form.get("Body", ""), provider_ref=sid
        )

    def _validity(self, valid_until: datetime | None) -> int:
        if valid_until is None:
            return self.validity_period_s
        left = int((valid_until - datetime.now(valid_until.tzinfo)).total_seconds())
        return max(1, min(self.validity_period_s, left))

    def _classify(self, exc: TwilioRestException) -> Outcome:
        code = str(exc.code or exc.status)
        reason = f"{exc.status} {exc.msg}"
        if exc.code in PERMANENT_CODES:
            return Failed(reason=reason, code=code, opted_out=exc.code == UNSUBSCRIBED)
        if exc.code == QUEUE_FULL:
            return Retry(reason=reason, code=code, queue_full=True)
        retry_after = _seconds(self._local.retry_after)
        if exc.status == 429 or exc.code in THROTTLE_CODES:
            return Retry(reason=reason, code=code, retry_after_s=retry_after)
        if exc.status >= 500:
            # 20500 and other 5xx: "retrying may send multiple messages" -- look it up first.
            return Retry(reason=reason, code=code, retry_after_s=retry_after, outcome_unknown=True)
        return Failed(reason=reason, code=code)


# A message Twilio lists as failed (30001: dropped from a full queue) or undelivered never
# reached the person: a look-up that found it recorded "sent", and nobody was alerted (a
# review). The send goes again.
_NEVER_ARRIVED = frozenset({"failed", "undelivered"})

# The most messages a look-up reads back to one number before it gives up (not "not found").
LOOKUP_MOST = 2_000


def _unanswered(exc: BaseException) -> bool:
    """Whether the connection was closed or reset before any answer: requests wraps
    http.client's RemoteDisconnected (a ConnectionResetError) in urllib3's ProtocolError."""
    seen: list[BaseException] = [exc]
    while seen:
        cause = seen.pop()
        if isinstance(cause, ConnectionResetError):
            return True
        seen.extend(arg for arg in (*cause.args, cause.__cause__) if isinstance(arg, BaseException))
    return False


def _seconds(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None  # an HTTP date: the dispatcher's own backoff applies


def _signed_sid(
    auth_token: str, *, url: str, form: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """The MessageSid of a webhook Twilio signed (X-Twilio-Signature, over our public URL and
    the form), in Twilio's own shape; anything else is refused."""
    signature = headers.get("x-twilio-signature", "")
    if not RequestValidator(auth_token).validate(url, dict(form), signature):
        raise ReportRejected("missing or invalid X-Twilio-Signature")
    if not all(_FIELD_NAME.fullmatch(name) for name in form):
        raise ReportRejected("a field name Twilio does not send")
    sid = form.get("MessageSid", "")
    if not _MESSAGE_SID.fullmatch(sid):
        raise ReportRejected("MessageSid is not a Twilio message id")
    return sid
