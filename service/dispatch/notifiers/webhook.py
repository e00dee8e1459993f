"""Alerts as signed JSON POSTs to an operator's endpoint (a chat bridge, another gateway)."""

import hashlib
import hmac
import json
from typing import ClassVar

import httpx

from service.config import Settings
from service.dispatch.notifiers.base import (
    Failed,
    Notifier,
    NotifierConfigError,
    Outcome,
    OutgoingMessage,
    Retry,
    Sent,
    revealed,
)
from service.send_window import check_send_window

SIGNATURE_HEADER = "X-Anjeon-Signature"


def signature(secret: bytes, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`: the receiver recomputes it to trust the POST."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def post_signed_json(url: str, payload: dict, *, secret: str | None, timeout_s: float = 10) -> int:
    """POST `payload` as JSON to `url`, signed like the notifier when a secret is given; the
    HTTP status (raises httpx.HTTPError when unreachable). For notices to staff endpoints."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret.encode(), body)
    return httpx.post(url, content=body, headers=headers, timeout=timeout_s).status_code


class WebhookNotifier(Notifier):
    """POSTs each alert as JSON, signed with HMAC-SHA256 in X-Anjeon-Signature. 2xx is sent;
    429, 5xx and network errors are retried (with Retry-After); other 4xx are final."""

    name: ClassVar[str] = "webhook"
    channels: ClassVar[tuple[str, ...]] = ("sms", "email")

    def __init__(self, *, url: str, secret: str, timeout_s: float = 10.0) -> None:
        if not url or not secret:
            raise NotifierConfigError("webhook needs ANJEON_WEBHOOK_URL and ANJEON_WEBHOOK_SECRET")
        if not url.startswith(("http://", "https://")):
            raise NotifierConfigError("ANJEON_WEBHOOK_URL must be an http(s) URL")
        self.url = url
        self._secret = secret.encode()
        # Fencing: a claim that lapsed once the request was built sends nothing (httpx runs
        # request hooks just before the transport; send_window.py).
        self._http = httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            event_hooks={"request": [lambda _request: check_send_window()]},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookNotifier":
        return cls(
            url=settings.webhook_url,
            secret=revealed(settings.webhook_secret),
            timeout_s=settings.webhook_timeout_s,
        )

    def describe(self) -> str:
        return f"webhook ({self.url.split('?')[0]})"

    def send(self, message: OutgoingMessage) -> Outcome:
        body = json.dumps(
            {
                "alert_id": message.alert_id,
                "reference": message.reference,
                "channel": message.channel,
                "to": message.to,
                "subject": message.subject,
                "text": message.text,
            },
            ensure_ascii=False,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, body),
            "Idempotency-Key": message.idempotency_key or message.reference,
        }
        try:
            response = self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Retry(reason=f"{type(exc).__name__}: {exc}")
        code = str(response.status_code)
        if response.is_success:
            return Sent(provider_ref=response.headers.get("X-Request-Id", ""))
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After", "")
            return Retry(
                reason=f"HTTP {code}",
                code=code,
                retry_after_s=float(after) if after.isascii() and after.isdigit() else None,
            )
        return Failed(reason=f"HTTP {code}: {response.text[:200]}", code=code)

    def close(self) -> None:
        self._http.close()
