"""Urgent first (#12 item 6), on both backends: the claim takes the most urgent class, then the
oldest; one row in ten of each batch goes to the oldest due rows whatever their class, so a
routine alert is never starved; every path that enqueues sets the row's class; and the claim's
statements stay on the open-rows index."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import sessionmaker

from service.advisories.models import Advisory
from service.db import utcnow
from service.geomatch.service import Sweeper
from service.ledger import outbox, priority
from service.ledger.enqueue import insert_alerts
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.fake_twilio import Answer
from tests.geomatch.builders import advisory, citizen

TOKYO = {"lat": 35.5, "lon": 139.5}
ROUTINE, URGENT = 9_000_001, 9_000_004  # advisory ids: the ledger has no foreign keys


def _queue(db, advisory_id: int, citizens: range, level: str) -> None:
    rows = [(advisory_id, 1, c, "sms", priority.of_level(level)) for c in citizens]
    insert_alerts(db.connection(), rows=rows, now=utcnow())


def _claim(db, limit: int, now=None) -> list[outbox.Claimed]:
    return outbox.claim(
        db, channel="sms", now=now or utcnow(), limit=limit, lease_s=120, worker="test"
    )


def _rows(db, **where) -> list[Alert]:
    db.expire_all()
    return list(db.scalars(select(Alert).filter_by(**where).order_by(Alert.id)))


def _issue(api, consul, **overrides) -> dict:
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()


def _advisory_id(db, public_id: str) -> int:
    return db.scalar(select(Advisory.id).where(Advisory.public_id == public_id))


# -- the order of the claim ----------------------------------------------------------------


def test_a_level_4_alert_behind_many_level_1_alerts_is_claimed_in_the_first_batch(db):
    _queue(db, ROUTINE, range(1, 1_201), "1")
    _queue(db, URGENT, range(1, 3), "4")
    batch = _claim(db, 500)
    assert len(batch) == 500
    # The two urgent rows come first (the dispatcher sends in this order); the rest are the
    # 498 oldest level-1 rows, 50 of them by the oldest share.
    assert [(r.advisory_id, r.priority) for r in batch[:2]] == [(URGENT, 1), (URGENT, 1)]
    assert all(r.advisory_id == ROUTINE and r.priority == 4 for r in batch[2:])
    routine_ids = [r.id for r in batch[2:]]
    first_routine = min(r.id for r in _rows(db, advisory_id=ROUTINE))
    assert routine_ids == list(range(first_routine, first_routine + 498))


def test_classes_go_in_order_then_age(db):
    for level, advisory_id in (("1", 1), ("2", 2), ("3", 3), ("special", 5), ("4", 4)):
        _queue(db, advisory_id, range(1, 4), level)
    insert_alerts(
        db.connection(), rows=[(6, 1, 1, "sms", priority.ROUTINE_ALL_CLEAR)], now=utcnow()
    )
    insert_alerts(db.connection(), rows=[(7, 1, 1, "sms", priority.CHECK_IN)], now=utcnow())
    order = []
    while batch := _claim(db, 4):  # a batch of 4 keeps one row for the oldest
        order.append([r.advisory_id for r in batch])
    # Batch by batch, most urgent first; the oldest share takes the oldest level-1 row early.
    assert order == [
        [7, 5, 5, 1],  # check-in; level special (queued before level 4); the oldest: level 1
        [5, 4, 4, 1],
        [4, 3, 3, 1],
        [3, 2, 2, 2],
        [6],
    ]


def test_each_batch_keeps_a_share_for_the_oldest_so_level_1_is_never_starved(db):
    _queue(db, ROUTINE, range(1, 4), "1")  # three old routine alerts
    next_citizen = 1
    claimed_routine = []
    for _round in range(3):
        # A flood: more level-4 alerts than a batch holds arrive before every claim.
        _queue(db, URGENT, range(next_citizen, next_citizen + 20), "4")
        next_citizen += 20
        batch = _claim(db, 10)
        assert len(batch) == 10
        routine = [r for r in batch if r.advisory_id == ROUTINE]
        assert len(routine) == 1  # 10 // 10: one row, the oldest
        assert batch[-1] == routine[0]  # sent after the urgent ones
        claimed_routine.append(routine[0].id)
    assert claimed_routine == sorted(claimed_routine)  # oldest first
    assert {r.status for r in _rows(db, advisory_id=ROUTINE)} == {"claimed"}


def test_the_oldest_share_of_a_batch():
    assert [priority.oldest_share(n) for n in (1, 2, 9, 10, 19, 20, 60, 500)] == [
        0,
        1,
        1,
        1,
        1,
        2,
        6,
        50,
    ]


def test_the_oldest_share_skips_rows_not_due_and_claims_nothing_twice(db):
    _queue(db, ROUTINE, range(1, 6), "1")
    _queue(db, URGENT, range(1, 30), "4")
    now = utcnow()
    first = _claim(db, 10, now)
    second = _claim(db, 10, now)  # the first batch's rows are leased: not due
    assert not {r.id for r in first} & {r.id for r in second}
    assert [r.advisory_id for r in first].count(ROUTINE) == 1
    assert [r.advisory_id for r in second].count(ROUTINE) == 1
    assert min(r.id for r in second if r.advisory_id == ROUTINE) > min(
        r.id for r in first if r.advisory_id == ROUTINE
    )
    # After the lease lapses, the first batch is due again (its outcome unknown).
    third = _claim(db, 100, now + timedelta(seconds=121))
    assert {r.id for r in first} <= {r.id for r in third}
    assert all(r.outcome_unknown for r in third if r.id in {c.id for c in first})


def test_the_claim_reads_the_open_rows_index(db, backend):
    _queue(db, ROUTINE, range(1, 50), "1")
    _queue(db, URGENT, range(1, 5), "4")
    statements = []
    connection = db.connection()

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", seen)
    try:
        assert len(_claim(db, 20)) == 20
    finally:
        event.remove(connection, "before_cursor_execute", seen)
    heads, claim = [s for s in statements if "alert" in s[0]]
    if backend == "postgresql":
        # Tiny tables make a scan cheapest; what matters is that the index applies at all.
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        explain = "EXPLAIN "
    else:
        explain = "EXPLAIN QUERY PLAN "
    for statement, parameters in (heads, claim):
        plan = " ".join(
            str(part)
            for row in connection.exec_driver_sql(explain + statement, parameters)
            for part in row
        )
        assert "ix_alert_open_priority" in plan, plan
        # No walk over the whole ledger: SQLite's "SCAN alert", PostgreSQL's "Seq Scan".
        assert not re.search(r"SCAN alert\b(?! USING)|Seq Scan on alert\b", plan), plan


# -- through the service: the fake Twilio sees the urgent alert first ----------------------


def test_the_dispatcher_sends_the_level_4_alerts_first(
    database_url, db, staff_headers, twilio, smtp
):
    settings = make_settings(database_url, **notifier_settings(twilio, smtp), dispatch_batch=5)
    consul = staff_headers("consul")
    with bound_client(settings, db) as api:
        for n in range(6):
            register(api, location=TOKYO, phone=f"010-7412-{n:04d}", channels=["sms"])
        _issue(api, consul, level=1, title={"ko": "도쿄 유의", "en": "Tokyo: caution"})
        _issue(api, consul, level=4, title={"ko": "도쿄 금지", "en": "Tokyo: do not travel"})
        dispatcher = dispatcher_in(db, settings)
        try:
            first = dispatcher.step()
            first_bodies = [m["body"] for m in twilio.messages]
            dispatcher.drain()
        finally:
            dispatcher.close()
    assert first.claimed == 5
    # Four of the six level-4 alerts, and the oldest level-1 alert (the batch's oldest share).
    assert sum("도쿄 금지" in b for b in first_bodies) == 4
    assert sum("도쿄 유의" in b for b in first_bodies) == 1
    assert len(twilio.messages) == 12


# -- every enqueue path sets the class -----------------------------------------------------


@pytest.mark.parametrize(("level", "expected"), [(1, 4), (2, 3), (3, 2), (4, 1), ("special", 1)])
def test_issuing_an_advisory_enqueues_its_level_class(api, consul, db, level, expected):
    # SQLite: matched in Python, written by executemany; PostgreSQL: INSERT … SELECT in PostGIS.
    register(api, location=TOKYO, phone="010-7412-1001", channels=["sms", "email"])
    issued = _issue(api, consul, level=level)
    rows = _rows(db, advisory_id=_advisory_id(db, issued["id"]))
    assert len(rows) == 2 and {r.priority for r in rows} == {expected}


def test_a_revision_enqueues_its_new_level_class(api, consul, db):
    register(api, location=TOKYO, phone="010-7412-1005", channels=["sms"])
    issued = _issue(api, consul, level=1)
    revised = api.patch(f"/v1/advisories/{issued['id']}", json={"level": 4}, headers=consul)
    assert revised.status_code == 200
    rows = _rows(db, advisory_id=_advisory_id(db, issued["id"]))
    assert [(r.revision, r.priority) for r in rows] == [(1, 4), (2, 1)]


def test_a_registration_enqueues_the_level_class(api, consul, db):
    # One citizen's few rows: executemany on SQLite, one unnest INSERT on PostgreSQL.
    issued = _issue(api, consul, level=3)
    register(api, location=TOKYO, phone="010-7412-1002", channels=["sms", "email"])
    rows = _rows(db, advisory_id=_advisory_id(db, issued["id"]))
    assert len(rows) == 2 and {r.priority for r in rows} == {priority.of_level("3")}


def test_the_sweep_enqueues_the_level_class(db):
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    now = utcnow()
    resident = citizen(db, lon=100.5, lat=13.75, channels=("sms", "email"))
    later = advisory(
        db, area={"subdivisions": ["TH-10"]}, level="special", effective=now + timedelta(hours=1)
    )
    assert Sweeper().run(factory, now=now + timedelta(hours=2)).enqueued >= 2
    rows = _rows(db, advisory_id=later.id, citizen_id=resident.id)
    assert len(rows) == 2 and {r.priority for r in rows} == {priority.of_level("special")}


def test_bulk_writes_carry_each_row_class(db, backend):
    # 1,200 rows: COPY on PostgreSQL; with one already there, its staging route.
    rows = [(ROUTINE + c % 3, 1, c, "sms", c % 6) for c in range(1, 1_201)]
    assert insert_alerts(db.connection(), rows=list(rows[:-1]), now=utcnow()) == 1_199
    assert insert_alerts(db.connection(), rows=list(rows), now=utcnow()) == 1
    stored = {(r.advisory_id, r.citizen_id): r.priority for r in _rows(db, channel="sms")}
    assert stored == {(a, c): p for a, _, c, _, p in rows}
    # Rows of four (older callers) take the class given, or level 1's.
    insert_alerts(db.connection(), rows=[(URGENT, 1, 1, "email")], now=utcnow(), priority=1)
    insert_alerts(db.connection(), rows=[(URGENT, 1, 2, "email")], now=utcnow())
    assert [r.priority for r in _rows(db, channel="email")] == [1, priority.DEFAULT]


@pytest.mark.parametrize(("level", "expected"), [(4, 1), ("special", 1), (3, 2), (2, 5), (1, 5)])
def test_a_cancellation_notice_keeps_an_urgent_class_and_a_routine_one_goes_last(
    api, consul, db, dispatcher, twilio, level, expected
):
    register(api, location=TOKYO, phone="010-7412-1003", channels=["sms"])
    issued = _issue(api, consul, level=level)
    dispatcher.drain()
    assert api.post(f"/v1/advisories/{issued['id']}/cancel", headers=consul).status_code == 200
    notices = _rows(db, advisory_id=_advisory_id(db, issued["id"]), revision=2)
    assert [(n.status, n.priority) for n in notices] == [("pending", expected)]


def test_a_fallback_keeps_the_class_of_the_alert_that_failed(
    api, consul, db, dispatcher, twilio, smtp
):
    register(api, location=TOKYO, phone="010-7412-1004", email="u4@example.com", channels=["sms"])
    twilio.script("+821074121004", Answer(400, code=21211))
    issued = _issue(api, consul, level=4)
    dispatcher.drain()
    sms, email = (
        _rows(db, advisory_id=_advisory_id(db, issued["id"]), channel=c) for c in ("sms", "email")
    )
    assert [(r.status, r.priority) for r in sms] == [("failed", 1)]
    assert [(r.status, r.priority, r.fallback_of) for r in email] == [("sent", 1, sms[0].id)]


def test_a_paced_channel_claims_at_most_half_a_lease_of_sends(api, consul, db, dispatcher, twilio):
    for n in range(12):
        register(api, location=TOKYO, phone=f"010-7412-2{n:03d}", channels=["sms"])
    _issue(api, consul, level=1)
    # At 1 segment/s a batch of 500 would hold an urgent alert behind 500 s of sends. Half the
    # lease (10 s) of sends at most: the batch is sent well inside its lease even if no
    # heartbeat renews it. The rate counts segments: before any SMS is rendered one is taken
    # as one segment, then as many as the last batch's had. (The sender was built unpaced:
    # only the batch size is under test.)
    assert dispatcher.policy.lease_s == 10
    dispatcher.notifiers["sms"].max_per_second = 1.0
    assert dispatcher.step().claimed == 5
    db.expire_all()
    segments = {row.segments for row in db.scalars(select(Alert).where(Alert.status == "sent"))}
    assert len(segments) == 1 and segments != {1}  # Korean and a link: more than one segment
    per_batch = max(1, int(5 / segments.pop()))
    assert dispatcher.step().claimed == per_batch
    assert dispatcher.step().claimed == per_batch


def test_a_slow_provider_makes_the_batch_smaller_so_an_urgent_alert_waits_less(
    db, database_url, twilio, smtp
):
    """Found by a fault probe: batches were sized by the sender's rate alone, so with Twilio
    answering in 0.5 s (and e-mail with no rate at all) a batch of 500 took 37 s, and a level 4
    committed meanwhile waited behind 508 level-1 SMS. A batch is now half a lease of sends at
    the pace the provider answers, measured."""
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), dispatch_threads=8, dispatch_lease_s=10
    )
    dispatcher = dispatcher_in(db, settings)
    try:
        mail = dispatcher.notifiers["email"]
        assert dispatcher.batch_limit("email", mail) == 500  # nothing measured yet
        for _ in range(30):
            dispatcher.observed_send("email", 0.5)
        # Eight threads, 5 s ahead, 0.5 s a send: 80 rows, sent in about 5 s.
        assert dispatcher.batch_limit("email", mail) == 80
        for _ in range(30):
            dispatcher.observed_send("email", 0.002)
        assert dispatcher.batch_limit("email", mail) == 500  # a fast provider: the batch again
    finally:
        dispatcher.close()
