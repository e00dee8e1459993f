"""Telling staff what became of what they proposed: approved or rejected, by whom, and why.
Sent after the decision commits (a lost notice loses no decision: the advisory shows it)."""

import logging
import uuid
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.approval import Decided
from service.config import Settings
from service.db import READ_ONLY
from service.dispatch.notifiers.base import Notifier, OutgoingMessage, Sent, revealed
from service.dispatch.notifiers.webhook import post_signed_json
from service.staff.models import StaffKey

log = logging.getLogger("anjeon.advisories.decisions")


def tell_proposer(
    factory: sessionmaker[Session],
    *,
    decided: Decided,
    notifiers: Mapping[str, Notifier],
    settings: Settings,
) -> bool:
    """E-mail the proposer's key contact, else POST the staff webhook; True when it went."""
    with factory() as session:
        # Read-only: on SQLite no write lock, so a busy writer does not hold the notice up.
        session.connection(execution_options={READ_ONLY: True})
        email = session.scalar(
            select(StaffKey.contact_email).where(StaffKey.name == decided.proposed_by)
        )
    what = "new advisory" if decided.kind == "issue" else "revision"
    subject = f"[{settings.alert_sender_en}] {decided.decision.upper()}: {decided.title}"
    text = (
        f"Your {what} of advisory {decided.advisory_public_id} ({decided.title}) was "
        f"{decided.decision} by {decided.decided_by}."
        + (f"\nReason: {decided.reason}" if decided.reason else "")
    )
    try:
        if email:
            outcome = notifiers["email"].send(
                OutgoingMessage(
                    alert_id=0,
                    channel="email",
                    to=email,
                    text=text,
                    subject=subject,
                    reference=f"decision-{uuid.uuid4().hex}",
                )
            )
            return isinstance(outcome, Sent)
        if settings.staff_webhook_url:
            payload = {
                "event": f"advisory.{decided.decision}",
                "advisory_id": decided.advisory_public_id,
                "title": decided.title,
                "kind": decided.kind,
                "proposed_by": decided.proposed_by,
                "decided_by": decided.decided_by,
                "reason": decided.reason,
            }
            status = post_signed_json(
                settings.staff_webhook_url, payload, secret=revealed(settings.webhook_secret)
            )
            return 200 <= status < 300
    except Exception:  # the decision stands; only the notice is lost
        log.exception("decision notice not sent", extra={"advisory": decided.advisory_public_id})
        return False
    log.info("decision not told: the proposer's key has no contact and no staff webhook is set")
    return False
