"""Response bodies of the alert views."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.ledger import states

# The states as the API names them: the ledger's own tuple, so they cannot drift apart.
AlertStatus = Literal[states.ALL]  # type: ignore[valid-type]


class AlertRead(BaseModel):
    id: int
    advisory_id: str
    revision: int
    exercise: bool = Field(description="true: an alert of a drill, not of a real advisory.")
    citizen_id: str
    channel: str
    contact: str | None  # masked
    status: str
    attempts: int
    segments: int | None
    error_code: str | None
    last_error: str | None
    fallback_of: int | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    updated_at: datetime | None
    deferred_until: datetime | None = Field(
        default=None,
        description="Held for the citizen's quiet hours (status retry_wait, error_code "
        "quiet-hours): when it goes.",
    )


class AlertPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AlertRead]


class RevisionCounts(BaseModel):
    """One revision's alerts by status and channel: the warning ("issued"), an update
    ("revised") or the all-clear ("cancelled")."""

    revision: int
    change: Literal["issued", "revised", "cancelled"]
    counts: dict[str, dict[str, int]] = Field(description="The revision's alerts.")
    asks: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='"Are you safe?" asks sent on their own under this revision (roll-call '
        "rounds, escalations), apart from its alerts: one citizen asked twice is two rows.",
    )


class AlertsRead(AlertPage):
    """Counts by status and channel ({"sent": {"sms": 3}}), and one page of the alert rows.
    "deferred" counts the retry_wait rows held for quiet hours (they are in retry_wait too)."""

    counts: dict[str, dict[str, int]] = Field(description="Every revision's alerts together.")
    by_revision: list[RevisionCounts] = Field(
        default_factory=list,
        description="The same counts for each revision apart, newest first: a cancelled "
        "advisory's all-clears apart from the warnings they follow.",
    )
    exercise: bool = False  # a drill: its alerts went only to citizens who opted in
    rows_forgotten_at: datetime | None = Field(
        None,
        description="When the advisory's alerts began to be deleted, ledger_retention_days "
        "after it ended: the counts are those kept then, and no alerts are listed. null: "
        "every alert is here.",
    )
