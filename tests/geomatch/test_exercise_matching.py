"""A drill (advisory.exercise) reaches only active citizens who opted in (citizen.exercises),
on every matching path: a new advisory (engine on SQLite, PostGIS on PostgreSQL), a new or
moved citizen, the sweep (fresh and incremental), and the preview's reach; PostGIS and the
engine agree. A real advisory reaches opted-in citizens as everyone else."""

from datetime import timedelta

import numpy as np
from sqlalchemy.orm import sessionmaker

from service.advisories import reach
from service.citizens.models import Citizen
from service.geo import matching
from service.geo.areas import area_from_json
from service.geomatch import postgis, targets
from service.geomatch.places import load_reachable
from service.geomatch.service import Sweeper, match_advisories, match_citizen
from tests.geomatch.builders import NOW, advisory, alerted, citizen

AREA = {"circles": [{"lat": 13.75, "lon": 100.5, "radius_km": 40}]}  # Bangkok


def _people(db, *, opted: int = 3, others: int = 3):
    """Citizens inside AREA, some opted in to exercises; one opted in far away; one opted-in
    citizen who is no longer active."""
    inside_opted, inside_others = set(), set()
    for i in range(opted + others):
        person = citizen(db, lon=100.5 + i * 0.01, lat=13.75, channels=("sms", "email"))
        person.exercises = i < opted
        (inside_opted if i < opted else inside_others).add(person.id)
    far = citizen(db, lon=2.35, lat=48.85)
    far.exercises = True
    erased = citizen(db, lon=100.5, lat=13.76)
    erased.exercises, erased.status = True, "erased"
    db.flush()
    return inside_opted, inside_others


def _drill(db, **overrides):
    record = advisory(db, area=AREA, **overrides)
    record.exercise = True
    db.flush()
    return record


def test_a_new_exercise_reaches_only_opted_in_citizens_a_real_one_everyone(db):
    opted, others = _people(db)
    drill = _drill(db)
    real = advisory(db, area=AREA)
    result = match_advisories(db, advisories=[drill, real], now=NOW)
    assert alerted(db, drill) == opted
    assert alerted(db, real) == opted | others
    assert result.enqueued == 2 * len(opted) + 2 * len(opted | others)  # SMS and e-mail each


def test_the_sweep_brings_a_drill_that_became_effective_to_opted_in_citizens_only(db):
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    opted, others = _people(db)
    drill = _drill(db, effective=NOW + timedelta(hours=2))
    sweeper = Sweeper()
    sweeper.run(factory, now=NOW)
    assert alerted(db, drill) == set()
    sweeper.run(factory, now=NOW + timedelta(hours=3))
    assert alerted(db, drill) == opted
    # Someone opting in between sweeps is read again (incremental) and reached.
    late = next(iter(others))
    person = db.get(Citizen, late)
    person.exercises, person.updated_at = True, NOW + timedelta(hours=3, minutes=1)
    db.flush()
    again = sweeper.run(factory, now=NOW + timedelta(hours=3, minutes=2))
    assert again.enqueued == 2 and alerted(db, drill) == opted | {late}
    assert Sweeper().run(factory, now=NOW + timedelta(hours=3, minutes=3)).enqueued == 0


def test_a_new_citizen_gets_a_running_drill_only_when_opted_in(db):
    drill = _drill(db)
    match_advisories(db, advisories=[drill], now=NOW)
    keen = citizen(db, lon=100.51, lat=13.74)
    keen.exercises = True
    idle = citizen(db, lon=100.52, lat=13.74)
    db.flush()
    assert match_citizen(db, citizen_id=keen.id, now=NOW).enqueued == 1
    assert match_citizen(db, citizen_id=idle.id, now=NOW).enqueued == 0
    assert alerted(db, drill) == {keen.id}


def test_the_reach_of_a_drill_counts_only_opted_in_citizens(db):
    opted, others = _people(db)
    area = area_from_json(_drill(db).area)
    window = {"effective": NOW - timedelta(hours=1), "expires": NOW + timedelta(days=1)}
    drill = reach.compute_reach(db, area=area, now=NOW, exercise=True, **window)
    real = reach.compute_reach(db, area=area, now=NOW, **window)
    assert set(drill.citizen_ids.tolist()) == opted
    assert drill.by_channel == {"sms": len(opted), "email": len(opted)}
    assert set(real.citizen_ids.tolist()) == opted | others


def test_postgis_and_the_engine_agree_on_a_drill(db, backend):
    opted, others = _people(db)
    record = _drill(db)
    target = targets.target(targets.live_of(record), area_from_json(record.area), now=NOW)
    today = matching.Today.at(NOW)
    reachable = load_reachable(db.connection(), today=today)
    everyone = matching.match(target, reachable.places, today=today)
    engine = reachable.opted_in(everyone[np.isin(everyone, reachable.citizen_ids)]).tolist()
    assert engine == sorted(opted)
    if backend != "postgresql":
        return  # SQLite has no PostGIS: the engine is its only matcher
    assert postgis.matched_ids(db.connection(), target=target, today=today, exercise=True) == engine
    assert postgis.matched_ids(db.connection(), target=target, today=today) == sorted(
        opted | others
    )
