"""Per-alert references and the links that carry them. The reference is in every message (the
details link, the e-mail's Message-ID), so a send whose outcome we never learnt can be found at
the provider; its keyed tag makes a link unguessable from an alert id."""

import hmac

from service.privacy import PersonalDataVault


class Links:
    def __init__(self, public_base_url: str, vault: PersonalDataVault) -> None:
        self.base = public_base_url.rstrip("/")
        self.vault = vault

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
