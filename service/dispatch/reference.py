"""Per-alert references and the links that carry them. The reference is in every message (the
details link, the e-mail's Message-ID), so a send whose outcome we never learnt can be found at
the provider; its keyed tag makes a link unguessable from an alert id."""

import hmac
from datetime import datetime, timedelta

from service.dispatch.checkin_tokens import CheckinTarget, CheckinTokens
from service.privacy import PersonalDataVault

# How long a check-in link answers: a citizen may be without signal for days.
CHECKIN_LINK_DAYS = 7


class Links:
    def __init__(self, public_base_url: str, vault: PersonalDataVault) -> None:
        self.base = public_base_url.rstrip("/")
        self.vault = vault
        self._checkin = CheckinTokens(vault.link_keys[0], vault.link_keys[1:])

    def reference(self, alert_id: int) -> str:
        return f"{alert_id}.{self.tag(alert_id)}"

    def tag(self, alert_id: int) -> str:
        # 96 bits: guessing a valid link for some alert id is out of reach.
        return self.vault.lookup_hash("alert-reference", str(alert_id))[:24]

    def parse(self, reference: str) -> int | None:
        """The alert id a reference names, or None when it is not one of ours."""
        head, _, tag = reference.partition(".")
        if not head.isascii() or not head.isdigit() or len(head) > 18:
            return None
        if not hmac.compare_digest(tag.encode(), self.tag(int(head)).encode()):
            return None
        return int(head)

    def details(self, reference: str) -> str:
        return f"{self.base}/a/{reference}"

    def status_callback(self, notifier: str, *, alert_id: int, attempt: int) -> str:
        """Where the provider reports on this send; the attempt tells it from earlier sends."""
        return f"{self.base}/v1/webhooks/{notifier}/status?alert={alert_id}&attempt={attempt}"

    def checkin_token(self, *, citizen_id: int, advisory_id: int, asked_at: datetime) -> str:
        """The signed token of a check-in link, valid CHECKIN_LINK_DAYS from asked_at (the
        alert row's creation: every attempt of one row carries the same token, which is what
        finds a send whose outcome was lost)."""
        expires = asked_at + timedelta(days=CHECKIN_LINK_DAYS)
        return self._checkin.issue(citizen_id, advisory_id, expires)

    def earlier_checkin_tokens(self, token: str) -> list[str]:
        """The token as the data secrets before the current one signed it (a rotation)."""
        return self._checkin.earlier(token)

    def checkin(self, token: str) -> str:
        return f"{self.base}/c/{token}"

    def read_checkin(self, token: str, now: datetime) -> CheckinTarget | None:
        """Whom and what a check-in token names; None when forged, altered or expired."""
        return self._checkin.verify(token, now)
