"""Provider scale (issue #15, item 5): a sender's rate in segments, shared by every dispatcher;
Twilio's queue for the sender respected (21611 refused, 30001 failed later: the sender is held
and nothing is lost or sent twice); ValidityPeriod from the advisory's end. The fake Twilio
models the sender's queue: `size` segments drained at `mps` a second."""

import threading
import time
from datetime import timedelta

import pytest
import redis
from limits.storage import MemoryStorage, Storage
from sqlalchemy import func, select, text

from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.dispatcher import Dispatcher, Policy
from service.dispatch.notifiers.base import Retry
from service.dispatch.notifiers.twilio_sms import TwilioNotifier
from service.dispatch.pacing import UNIT, SenderRate, open_storage
from service.dispatch.render import Renderer
from service.ledger.models import Alert
from service.privacy import PersonalDataVault
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import redis_url_for_tests
from tests.dispatch.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, SenderQueue
from tests.dispatch.seed import scratch_database, seed_pending
from tests.dispatch.test_status_webhook import callback, status_of

SECRET = b"provider-scale-secret-provider-scale-0123"


def _counted(storage: Storage, key: str, windows: range) -> int:
    return sum(storage.get(f"sender/{key}/{w}") for w in windows)


def test_a_message_spends_its_segments():
    """A 3-segment SMS takes 3 segments of the sender's rate, a 1-segment one takes 1."""
    storage = MemoryStorage()
    sender = SenderRate(key="t", per_second=4, storage=storage, shared=True)
    start = int(time.time())
    assert sender.wait(3)
    assert _counted(storage, "t", range(start, start + 5)) == 3 * UNIT
    assert sender.wait(1)
    assert _counted(storage, "t", range(start, start + 5)) == 4 * UNIT


def test_two_processes_share_the_sender_not_each_its_own():
    """Two SenderRates on one storage hand out the sender's 20 segments a second once in all:
    120 segments fill six one-second windows, the first already under way, so they take over
    four seconds (each on its own would fill three, in under three)."""
    storage = MemoryStorage()
    a, b = (SenderRate(key="s", per_second=20, storage=storage, shared=True) for _ in range(2))
    started = time.time()
    for _ in range(60):
        assert a.wait(1) and b.wait(1)
    # A lower bound: a busy machine only makes it later.
    assert time.time() - started > 4.0


def test_a_held_sender_sends_nothing_anywhere_then_ramps_up():
    storage = MemoryStorage()
    a, b = (
        SenderRate(key="h", per_second=10, storage=storage, shared=True, hold_s=5, ramp_s=5)
        for _ in range(2)
    )
    until = a.hold()
    now = int(time.time())
    taken = [storage.get(f"sender/h/{w}") for w in range(now, now + 11)]
    assert taken[1:4] == [10 * UNIT] * 3  # held: every window full
    assert taken[5] > taken[7] > taken[9] > 0  # then less and less: the rate comes back
    assert b.held_until() == pytest.approx(until, abs=1.0)
    assert not b.wait(1)  # the other process stops too, at once


def test_with_redis_away_a_process_sends_its_share_alone():
    """Nothing answers at the storage's address: no send fails for it; this process takes the
    rate divided by the dispatchers alive (2 here), 5 segments a second."""
    storage, shared = open_storage("redis://127.0.0.1:1/0")
    sender = SenderRate(key="away", per_second=10, storage=storage, shared=shared, live=lambda: 2)
    started = time.time()
    assert all(sender.wait(1) for _ in range(15))
    assert time.time() - started > 2.0  # a lower bound: 15 at 5 a second, not at 10


def _dispatcher(url: str, twilio: FakeTwilio, *, mps: float, storage: Storage, shared: bool):
    notifier = TwilioNotifier(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        sender="+15005550006",
        api_base=twilio.url,
        max_per_second=mps,
        timeout_s=5,
    )
    return Dispatcher(
        make_session_factory(make_engine(url)),
        notifiers={"sms": notifier},
        renderer=Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3),
        vault=PersonalDataVault(SECRET),
        public_base_url="https://anjeon.test",
        policy=Policy(batch=4, threads=4, lease_s=30, hold_s=1.0, ramp_s=1.0),
        lanes=False,
        rate_storage=storage,
        shared_rate=shared,
    )


def _drain_together(url: str, dispatchers: list[Dispatcher]) -> None:
    """Each dispatcher drains in its own thread until no SMS is left open (the seeded
    e-mails have no notifier here)."""

    def run(dispatcher: Dispatcher) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            dispatcher.drain()
            rows = _sms_rows(url)
            if not rows.keys() & {"pending", "retry_wait", "claimed"}:
                return
            time.sleep(0.2)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for d in dispatchers:
        d.close()


def _sms_rows(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, count(*) FROM alert WHERE channel = 'sms' GROUP BY status")
        ).all()
    engine.dispose()
    return dict(rows)


@pytest.mark.parametrize("storage", ["memory", "redis", "separate"])
def test_two_dispatchers_keep_within_the_senders_queue(database_url, tmp_path, twilio, storage):
    """Two dispatchers, each configured with the sender's 8 segments a second, on a queue of 24
    segments drained at 8 a second. Sharing the rate (one storage object, or Redis opened by
    each), the queue never overflows. Each on its own (the control), they send twice the rate
    and Twilio refuses with 21611; the hold brings them back under it. Either way every SMS
    arrives once and none is left over."""
    citizens = 40  # Korean SMS of 2-3 segments: ~100 segments, 12 s at 8 a second
    with scratch_database(database_url, tmp_path, f"share_{storage}") as url:
        seed_pending(url, citizens=citizens, secret=SECRET)
        if storage == "redis":
            shared_url = redis_url_for_tests("the provider-scale test")
            client = redis.Redis.from_url(shared_url)
            for key in client.scan_iter(match="anjeon:sender/*"):
                client.delete(key)
            client.close()
            stores = [open_storage(shared_url), open_storage(shared_url)]
            assert all(shared for _, shared in stores)
        elif storage == "memory":
            one = MemoryStorage()
            stores = [(one, True), (one, True)]
        else:
            stores = [(MemoryStorage(), False), (MemoryStorage(), False)]
        twilio.queue = SenderQueue(size=24, mps=8)
        dispatchers = [
            _dispatcher(url, twilio, mps=8, storage=s, shared=shared) for s, shared in stores
        ]
        _drain_together(url, dispatchers)
        bodies = [m["body"] for m in twilio.messages]
        print(
            f"\nSHARE {storage}: {len(bodies)} SMS, {twilio.queue.accepted} segments, queue peak "
            f"{twilio.queue.peak:.1f} of 24, overflows {twilio.queue.overflows}"
        )
        assert len(bodies) == len(set(bodies)) == citizens  # every SMS once
        assert _sms_rows(url) == {"sent": citizens}
        if storage == "separate":
            assert twilio.queue.overflows > 0  # the control: the fake sees a doubled rate
        else:
            assert twilio.queue.overflows == 0


def test_a_full_queue_holds_the_sender_and_keeps_every_alert(database_url, tmp_path, twilio):
    """Twilio's queue for the number is full (21611) for part of a burst: the refused alerts
    keep their tries and go once the hold ends; none is lost or sent twice."""
    citizens = 30
    with scratch_database(database_url, tmp_path, "queue_full") as url:
        seed_pending(url, citizens=citizens, secret=SECRET)
        # A queue of 12 segments drained at 4 a second, and a dispatcher told the sender may
        # send 40: the queue fills at once, and only the holds keep the sends within it.
        twilio.queue = SenderQueue(size=12, mps=4)
        dispatcher = _dispatcher(url, twilio, mps=40, storage=MemoryStorage(), shared=False)
        _drain_together(url, [dispatcher])
        refused = [r for r in twilio.requests if r.method == "create" and r.answer == "400"]
        bodies = [m["body"] for m in twilio.messages]
        print(f"\nQUEUE FULL: {len(refused)} creates refused with 21611, {len(bodies)} SMS")
        assert refused and twilio.queue.overflows == len(refused)
        assert len(bodies) == len(set(bodies)) == citizens
        assert _sms_rows(url) == {"sent": citizens}
        engine = make_engine(url)
        with engine.connect() as conn:
            # A refusal for a full queue is not a try: every row was tried once, in the end.
            budget = conn.scalar(
                select(func.max(Alert.attempts - Alert.retry_base)).where(Alert.channel == "sms")
            )
        engine.dispose()
        assert budget == 1


def test_a_queue_overflow_callback_sends_the_alert_again_once(
    api, consul, db, dispatcher, twilio, monkeypatch
):
    """Through a messaging service Twilio accepts the message, then fails it with 30001: the
    callback puts the alert back in the queue (its tries kept) and it is sent once more; the
    same callback repeated changes nothing, and holds the sender only the first time (a probe
    replayed one signed report every 30 s and held every SMS for as long as it went on)."""
    held = []
    app_dispatcher = api.app.state.dispatcher
    hold = app_dispatcher.hold_sender
    monkeypatch.setattr(app_dispatcher, "hold_sender", lambda ch: held.append(ch) or hold(ch))
    twilio.queue = SenderQueue(size=0, mps=1)  # every create overflows
    dispatcher.notifiers["sms"].messaging_service_sid = "MG" + "0" * 32
    register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7777-3001", channels=["sms"])
    api.post("/v1/advisories", json=advisory_body(), headers=consul)
    dispatcher.drain()
    db.expire_all()
    [alert] = db.scalars(select(Alert))
    assert alert.status == "sent" and len(twilio.overflowed) == 1
    first_sid, first_attempt = twilio.overflowed[0]["sid"], alert.attempts
    assert callback(api, alert, "failed", ErrorCode="30001").status_code == 204
    row = status_of(db, alert)
    assert row.status == "pending" and row.error_code == "30001"
    assert row.attempts - row.retry_base == 0  # the overflow cost no try
    assert held == ["sms"]
    again = callback(api, alert, "failed", sid=first_sid, ErrorCode="30001")
    assert again.status_code == 204 and status_of(db, alert).status == "pending"
    assert held == ["sms"]
    twilio.queue = None  # the queue has room again
    db.execute(
        Alert.__table__.update().where(Alert.id == alert.id).values(due_at=utcnow())
    )  # as when the hold ends
    dispatcher._paused_until.clear()
    dispatcher.drain()
    row = status_of(db, alert)
    assert row.status == "sent" and row.provider_ref != first_sid
    assert len(twilio.bodies_to("+821077773001")) == 2  # the overflowed one, and the resend
    # A late repeat of the first callback names the first send: the resend is untouched.
    late = callback(api, alert, "failed", attempt=first_attempt, sid=first_sid, ErrorCode="30001")
    assert late.status_code == 204 and status_of(db, alert).status == "sent"
    assert held == ["sms"]
    dispatcher.drain()
    assert len(twilio.bodies_to("+821077773001")) == 2


def test_validity_period_is_what_is_left_of_the_advisory(api, consul, db, dispatcher, twilio):
    """An alert still queued at Twilio when its advisory ends dies there."""
    register(api, location={"lat": 35.5, "lon": 139.5}, phone="010-7777-3002", channels=["sms"])
    ends = utcnow() + timedelta(minutes=10)
    api.post("/v1/advisories", json=advisory_body(expires=ends.isoformat()), headers=consul)
    dispatcher.drain()
    [post] = twilio.posts
    assert 570 <= int(post["ValidityPeriod"]) <= 600  # 10 minutes, less the time to send


@pytest.mark.parametrize("kept_rate", [True, False])
def test_a_senders_hold_ends_on_the_databases_clock(database_url, twilio, kept_rate):
    """A review: the hold was written on this machine's clock and read against the
    database's, so a machine 20 s ahead of its database held every SMS, level 4 too, 20 s
    past the hold. Both shapes (a sender's rate kept in storage, or none) now answer on the
    clock claims are read on."""
    dispatcher = _dispatcher(database_url, twilio, mps=4, storage=MemoryStorage(), shared=True)
    if not kept_rate:  # a notifier with no rate of its own: the policy's hold
        dispatcher._senders[id(dispatcher.notifiers["sms"])] = None
    try:
        dispatcher.clock._offset = timedelta(seconds=-20)  # the database 20 s behind
        until = dispatcher.hold_sender("sms")
        left = (until - dispatcher.clock.now()).total_seconds()
        assert 0 < left <= dispatcher.policy.hold_s + 0.5, left
        assert dispatcher._paused_until["sms"] == until
        wait = dispatcher._backpressure(
            "sms", dispatcher.notifiers["sms"], Retry(reason="queue full", code="21611")
        )
        assert wait.retry_after_s is not None and wait.retry_after_s <= 1.5
    finally:
        dispatcher.close()
