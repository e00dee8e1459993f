"""While a channel's provider is down (its circuit open), urgent alerts go on the citizen's other
channel too. Told ahead of a trip, an alert is one urgency class later (priority.told_ahead): a
level 4 still goes on the other channel, a level 3 waits for its provider with level 2 (the
citizen is not there yet). Both backends."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from service.db import utcnow
from service.dispatch.models import NotifierCircuit
from service.ledger.models import Ahead, Alert
from tests.advisories.builders import advisory_body
from tests.builders import register, stay

TOKYO = {"lat": 35.68, "lon": 139.69}


@pytest.mark.parametrize(("level", "other_channel"), [(4, True), (3, False)])
def test_a_warning_told_ahead_goes_by_email_while_sms_is_down_only_at_level_4(
    api, consul, db, dispatcher, level, other_channel
):
    # Flying to Tokyo in five days; SMS chosen, an e-mail address given.
    register(api, phone="010-7555-0001", channels=["sms"], stays=[stay(5, 5, **TOKYO)])
    body = advisory_body(level=level, area={"circles": [{**TOKYO, "radius_km": 30}]})
    assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
    [sms] = db.scalars(select(Alert).where(Alert.channel == "sms")).all()
    assert sms.told_ahead == Ahead.WAITING
    now = utcnow()
    db.add(
        NotifierCircuit(
            notifier="twilio",
            channel="sms",
            state="open",
            opened=1,
            open_until=now + timedelta(hours=1),
            changed_at=now,
        )
    )
    db.flush()
    dispatcher.step(now=now, channels=["sms"])
    db.expire_all()
    email = db.scalars(select(Alert).where(Alert.channel == "email")).all()
    assert [row.fallback_of for row in email] == ([sms.id] if other_channel else [])
