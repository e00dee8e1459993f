"""Told ahead (alert.told_ahead): a citizen in reach only by a stay that has not begun (or of an
advisory not yet in effect) gets a ledger row marked told ahead, on every matching path and both
backends alike: the new advisory (engine on SQLite, PostGIS on PostgreSQL), the new citizen, and
the sweep (PostGIS for a few advisories, the engine by shards for many)."""

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import sessionmaker

from service.checkin.rollcall import start_round
from service.errors import TooManyRequests
from service.geomatch.arrivals import told_ahead
from service.geomatch.service import POSTGIS_AT_MOST, Sweeper, match_advisories, match_citizen
from service.ledger import outbox, priority
from service.ledger.enqueue import insert_alerts
from service.ledger.models import Ahead, Alert
from tests.geomatch import builders
from tests.geomatch.builders import NOW, TODAY, citizen

NO, WAITING, ASKED = Ahead.NO, Ahead.WAITING, Ahead.ASKED
TOKYO = (139.69, 35.68)
SEOUL = (126.98, 37.57)
AREA = {"circles": [{"lat": TOKYO[1], "lon": TOKYO[0], "radius_km": 50}]}


advisory = builders.with_revision


def _stay(days_from_today: int, length: int) -> tuple:
    start = TODAY + timedelta(days=days_from_today)
    return (*TOKYO, "JP", start, start + timedelta(days=length))


def _people(db) -> dict[str, int]:
    """Five citizens, each reached by the Tokyo circle in another way."""
    made = {
        "here": citizen(db, lon=TOKYO[0], lat=TOKYO[1]),
        "coming": citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[_stay(5, 7)]),
        "arrived": citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[_stay(-1, 6)]),
        "arrives_today": citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[_stay(0, 3)]),
        "here_and_coming_back": citizen(db, lon=TOKYO[0], lat=TOKYO[1], stays=[_stay(5, 7)]),
    }
    return {name: person.id for name, person in made.items()}


def _first_rows(db, record, column) -> dict[int, int]:
    """Each citizen's `column` of the advisory's first rows (not check-in requests)."""
    db.expire_all()
    rows = db.execute(
        select(Alert.citizen_id, column).where(
            Alert.advisory_id == record.id, Alert.checkin_round == 0
        )
    ).all()
    return dict(rows)


def _ahead(db, record) -> dict[int, bool]:
    return {cid: told == WAITING for cid, told in _first_rows(db, record, Alert.told_ahead).items()}


def _only_coming_is_ahead(people: dict[str, int]) -> dict[int, bool]:
    return {cid: name == "coming" for name, cid in people.items()}


def _classes(db, record) -> dict[int, int]:
    """Each citizen's urgency class (alert.priority)."""
    return _first_rows(db, record, Alert.priority)


def _a_class_later_when_ahead(ahead: dict[int, bool], level: str) -> dict[int, int]:
    there = priority.of_level(level)
    return {cid: priority.told_ahead(there) if told else there for cid, told in ahead.items()}


def test_a_new_advisory_marks_those_reached_only_by_a_stay_not_begun(db):
    people = _people(db)
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    assert _ahead(db, record) == _only_coming_is_ahead(people)
    # In a burst those there now go first: the traveller's warning is a class later.
    assert _classes(db, record) == _a_class_later_when_ahead(_only_coming_is_ahead(people), "4")
    assert priority.told_ahead(priority.of_level("4")) == priority.of_level("3")


def test_before_an_advisory_is_in_effect_everyone_it_reaches_is_told_ahead(db):
    people = _people(db)
    record = advisory(
        db, area=AREA, level="4", effective=NOW + timedelta(days=2), expires=NOW + timedelta(days=9)
    )
    match_advisories(db, advisories=[record], now=NOW)
    # Current locations wait for it to be in effect; every stay it overlaps is told ahead.
    assert _ahead(db, record) == {
        people[name]: True
        for name in ("coming", "arrived", "arrives_today", "here_and_coming_back")
    }


def test_a_new_citizen_with_a_trip_ahead_is_marked_and_one_already_there_is_not(db):
    record = advisory(db, area=AREA, level="4")
    coming = citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[_stay(5, 7)])
    arrived = citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[_stay(-1, 6)])
    for person in (coming, arrived):
        match_citizen(db, citizen_id=person.id, now=NOW)
    assert _ahead(db, record) == {coming.id: True, arrived.id: False}
    assert _classes(db, record) == {coming.id: priority.of_level("3"), arrived.id: 1}


@pytest.mark.parametrize("advisories", [1, POSTGIS_AT_MOST + 1], ids=["few", "many"])
def test_the_sweep_marks_them_alike_by_postgis_and_by_shards(db, advisories):
    people = _people(db)
    records = [advisory(db, area=AREA, level="4") for _ in range(advisories)]
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    swept = Sweeper(shard_citizens=2).run(factory, now=NOW)
    assert swept.enqueued == len(people) * advisories
    for record in records:
        assert _ahead(db, record) == _only_coming_is_ahead(people)
        assert _classes(db, record) == _a_class_later_when_ahead(_ahead(db, record), "4")


def _rows(db, record) -> dict[int, list[tuple[int, Ahead, str]]]:
    """Each citizen's rows of the advisory: (round, told_ahead, status), in round order."""
    db.expire_all()
    found: dict[int, list[tuple[int, Ahead, str]]] = {}
    for cid, number, ahead, status in db.execute(
        select(Alert.citizen_id, Alert.checkin_round, Alert.told_ahead, Alert.status)
        .where(Alert.advisory_id == record.id)
        .order_by(Alert.citizen_id, Alert.checkin_round, Alert.channel)
    ):
        found.setdefault(cid, []).append((number, Ahead(ahead), status))
    return found


def _sent(db, *citizen_ids: int) -> None:
    db.execute(
        update(Alert).where(Alert.citizen_id.in_(citizen_ids)).values(status="sent", sent_at=NOW)
    )


def _sweep(db, now):
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    return Sweeper(shard_citizens=2).run(factory, now=now)


def test_when_the_advisory_takes_effect_those_there_are_asked_and_the_traveller_is_not(db):
    people = _people(db)
    record = advisory(
        db,
        area=AREA,
        level="4",
        effective=NOW + timedelta(hours=2),
        expires=NOW + timedelta(days=9),
    )
    match_advisories(db, advisories=[record], now=NOW)
    _sent(db, people["arrived"], people["here_and_coming_back"], people["coming"])
    swept = _sweep(db, NOW + timedelta(hours=3))
    rows = _rows(db, record)
    # Sent without the ask: a check-in request follows. Not sent yet: the row itself asks.
    # (The sent warning keeps saying it did not ask: every attempt of a row says the same.)
    assert rows[people["arrived"]] == [(0, ASKED, "sent"), (1, NO, "pending")]
    assert rows[people["here_and_coming_back"]] == [(0, ASKED, "sent"), (1, NO, "pending")]
    assert rows[people["arrives_today"]] == [(0, NO, "pending")]
    assert rows[people["here"]] == [(0, NO, "pending")]  # reached once it took effect
    assert rows[people["coming"]] == [(0, WAITING, "sent")]  # not there yet: nothing more
    assert swept.asked_on_arrival == 3
    # The row that now asks goes in the class of those there now; the rest keep theirs.
    classes = _classes(db, record)
    assert classes[people["arrives_today"]] == priority.of_level("4")
    assert classes[people["arrived"]] == priority.told_ahead(priority.of_level("4"))
    assert _sweep(db, NOW + timedelta(hours=4)).asked_on_arrival == 0  # asked once
    assert _rows(db, record) == rows


def test_a_traveller_is_asked_by_the_first_sweep_after_their_trip_begins(db):
    people = _people(db)
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    _sent(db, people["coming"])
    assert _sweep(db, NOW + timedelta(days=1)).asked_on_arrival == 0
    assert _rows(db, record)[people["coming"]] == [(0, WAITING, "sent")]
    swept = _sweep(db, NOW + timedelta(days=5))  # the stay begins
    assert swept.asked_on_arrival == 1
    assert _rows(db, record)[people["coming"]] == [(0, ASKED, "sent"), (1, NO, "pending")]


def test_a_row_whose_send_may_have_reached_the_provider_keeps_its_words(db):
    """Its outcome is looked up by the reference of what it sent: an ask would change it."""
    people = _people(db)
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    db.execute(
        update(Alert)
        .where(Alert.citizen_id == people["coming"])
        .values(status="retry_wait", outcome_unknown=True)
    )
    assert _sweep(db, NOW + timedelta(days=5)).asked_on_arrival == 1
    assert _rows(db, record)[people["coming"]] == [(0, ASKED, "retry_wait"), (1, NO, "pending")]


def test_an_advisory_that_does_not_ask_asks_nobody_on_arrival(db):
    people = _people(db)
    record = advisory(db, area=AREA, level="2")
    match_advisories(db, advisories=[record], now=NOW)
    assert _sweep(db, NOW + timedelta(days=5)).asked_on_arrival == 0
    assert _rows(db, record)[people["coming"]] == [(0, WAITING, "pending")]


def test_a_staff_round_asks_the_traveller_and_their_arrival_then_asks_nothing_more(db):
    people = _people(db)
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    _sent(db, *people.values())
    assert start_round(db, advisory=record, now=NOW).round == 1
    assert _rows(db, record)[people["coming"]] == [(0, ASKED, "sent"), (1, NO, "pending")]
    assert _sweep(db, NOW + timedelta(days=5)).asked_on_arrival == 0


def test_an_arrivals_ask_does_not_hold_up_a_staff_round(db):
    people = _people(db)
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    _sent(db, people["coming"])
    arrived = NOW + timedelta(days=5)
    assert _sweep(db, arrived).asked_on_arrival == 1
    started = start_round(db, advisory=record, now=arrived + timedelta(seconds=1))
    assert started.asked == len(people)
    with pytest.raises(TooManyRequests):  # staff's own rounds keep their gap
        start_round(db, advisory=record, now=arrived + timedelta(minutes=5))


def test_the_sweep_reads_the_rows_told_ahead_through_their_partial_index(db, backend):
    statement = told_ahead([1, 2])
    if backend == "sqlite":
        # Bound parameters, as the sweep sends it (a literal list may plan otherwise).
        compiled = statement.compile(db.get_bind(), compile_kwargs={"render_postcompile": True})
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        explain = db.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        plan = " ".join(str(row[-1]) for row in explain)
        # Searched by advisory, not the whole index scanned (rows of travellers who never
        # arrive stay in it while their advisory lives).
        assert "SEARCH alert USING INDEX ix_alert_told_ahead (advisory_id=?)" in plan, plan
        return
    db.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask what it can use
    compiled = statement.compile(db.get_bind(), compile_kwargs={"literal_binds": True})
    plan = " ".join(row[0] for row in db.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_alert_told_ahead" in plan, plan


def test_every_bulk_writer_keeps_which_rows_were_told_ahead(db):
    """A few rows in one statement, many by COPY, and a COPY that meets rows already there
    (the staging route that drops duplicates): each keeps its told-ahead mark."""
    rows = [(9, 1, cid, "sms", 2, cid % 3 == 0) for cid in range(1, 1_501)]
    assert insert_alerts(db.connection(), rows=rows[:10], now=NOW) == 10
    assert insert_alerts(db.connection(), rows=rows[10:1_200], now=NOW) == 1_190
    assert insert_alerts(db.connection(), rows=rows, now=NOW) == 300
    marked = db.execute(select(Alert.citizen_id, Alert.told_ahead).where(Alert.advisory_id == 9))
    assert dict(marked.all()) == {cid: int(told) for _, _, cid, _, _, told in rows}


def test_a_fallback_left_waiting_after_its_citizen_was_asked_is_only_marked(db):
    """A fallback on the other channel written while a sweep marked the row it fell back from
    still says 'waiting': the next sweep marks it, and asks nobody twice."""
    people = _people(db)
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    _sent(db, people["coming"])
    arrived = NOW + timedelta(days=5)
    assert _sweep(db, arrived).asked_on_arrival == 1
    fallback = (record.id, record.revision, people["coming"], "email", 2, True)
    insert_alerts(db.connection(), rows=[fallback], now=arrived)
    assert _sweep(db, arrived + timedelta(minutes=1)).asked_on_arrival == 0
    assert _rows(db, record)[people["coming"]] == [
        (0, ASKED, "pending"),  # the e-mail fallback: marked, its words unchanged
        (0, ASKED, "sent"),
        (1, NO, "pending"),  # the one request, on SMS
    ]


def test_in_a_burst_those_there_now_are_claimed_before_those_told_ahead(db):
    """Same advisory, same level: the traveller's row (written first) waits for the resident's."""
    coming = citizen(db, lon=SEOUL[0], lat=SEOUL[1], stays=[_stay(5, 7)])
    here = citizen(db, lon=TOKYO[0], lat=TOKYO[1])
    assert coming.id < here.id
    record = advisory(db, area=AREA, level="4")
    match_advisories(db, advisories=[record], now=NOW)
    claimed = outbox.claim(db, channel="sms", now=NOW, limit=1, lease_s=60, worker="test")
    assert [row.citizen_id for row in claimed] == [here.id]
    claimed = outbox.claim(db, channel="sms", now=NOW, limit=1, lease_s=60, worker="test")
    assert [row.citizen_id for row in claimed] == [coming.id]
