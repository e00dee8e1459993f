"""When matching runs: at once on registration, moves and advisories; in the sweep; once."""

import time
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from service import lease
from service.advisories.models import Advisory
from service.db import utcnow
from service.geomatch import service as geomatch_service
from service.geomatch.service import POSTGIS_AT_MOST, Sweeper, match_advisories, match_citizen
from service.ledger.models import Alert
from service.scheduler import fenced_by_lease
from tests.advisories.builders import advisory_body
from tests.builders import register
from tests.geomatch.builders import NOW, advisory, alerted, citizen

TOKYO = {"lat": 35.68, "lon": 139.69}
_MANY = POSTGIS_AT_MOST + 1


def _alerts(db, **where):
    query = select(Alert.channel, Alert.status, Alert.revision)
    for name, value in where.items():
        query = query.where(getattr(Alert, name) == value)
    return sorted(db.execute(query).all())


def _advisory_id(db, public_id):
    return db.scalar(select(Advisory.id).where(Advisory.public_id == public_id))


def test_issuing_an_advisory_enqueues_each_channel_once(client, db, staff_headers):
    register(client, location=TOKYO, channels=["sms", "email"])
    created = client.post("/v1/advisories", json=advisory_body(), headers=staff_headers("consul"))
    advisory_id = _advisory_id(db, created.json()["id"])
    assert _alerts(db, advisory_id=advisory_id) == [("email", "pending", 1), ("sms", "pending", 1)]


def test_a_revision_alerts_again_and_a_rerun_changes_nothing(client, db, staff_headers):
    consul = staff_headers("consul")
    register(client, location=TOKYO, channels=["sms"])
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    client.patch(f"/v1/advisories/{created['id']}", json={"level": 3}, headers=consul)
    advisory_id = _advisory_id(db, created["id"])
    assert _alerts(db, advisory_id=advisory_id) == [("sms", "pending", 1), ("sms", "pending", 2)]
    sweep = Sweeper().run(
        sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint"), now=NOW
    )
    assert sweep.enqueued == 0
    assert len(_alerts(db, advisory_id=advisory_id)) == 2


def test_registering_inside_an_active_advisory_enqueues_at_once(client, db, staff_headers):
    created = client.post("/v1/advisories", json=advisory_body(), headers=staff_headers("consul"))
    advisory_id = _advisory_id(db, created.json()["id"])
    register(client, location=TOKYO, channels=["email"])
    assert _alerts(db, advisory_id=advisory_id) == [("email", "pending", 1)]


def test_moving_into_the_area_enqueues(client, db, staff_headers):
    created = client.post("/v1/advisories", json=advisory_body(), headers=staff_headers("consul"))
    advisory_id = _advisory_id(db, created.json()["id"])
    citizen_id, auth, _ = register(client, location={"lat": 37.5, "lon": 127.0})
    assert _alerts(db, advisory_id=advisory_id) == []
    client.put(f"/v1/citizens/{citizen_id}/location", json=TOKYO, headers=auth)
    assert len(_alerts(db, advisory_id=advisory_id)) == 2


def test_erasure_cancels_pending_alerts(client, db, staff_headers):
    citizen_id, auth, _ = register(client, location=TOKYO)
    created = client.post("/v1/advisories", json=advisory_body(), headers=staff_headers("consul"))
    advisory_id = _advisory_id(db, created.json()["id"])
    client.delete(f"/v1/citizens/{citizen_id}", headers=auth)
    assert {s for _, s, _ in _alerts(db, advisory_id=advisory_id)} == {"cancelled"}


def test_test_status_and_cancelled_advisories_enqueue_nothing(db):
    person = citizen(db, lon=5.0, lat=5.0)
    exercise = advisory(
        db, area={"countries": [person.places[0].country or "GH"]}, alerts_citizens=False
    )
    circle = {"circles": [{"lat": 5.0, "lon": 5.0, "radius_km": 10}]}
    cancelled = advisory(db, area=circle)
    cancelled.status = "cancelled"
    expired = advisory(
        db, area=circle, effective=NOW - timedelta(days=3), expires=NOW - timedelta(days=1)
    )
    result = match_advisories(db, advisories=[exercise, cancelled, expired], now=NOW)
    assert result.enqueued == 0
    assert not alerted(db, exercise) and not alerted(db, cancelled) and not alerted(db, expired)


def test_sweep_catches_what_time_changed_and_is_idempotent(db):
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    resident = citizen(db, lon=100.5, lat=13.75, channels=("sms", "email"))
    later = advisory(db, area={"subdivisions": ["TH-10"]}, effective=NOW + timedelta(hours=2))
    sweeper = Sweeper()
    assert resident.id not in alerted(db, later)
    first = sweeper.run(factory, now=NOW + timedelta(hours=3))
    assert first.enqueued >= 2 and resident.id in alerted(db, later)
    again = sweeper.run(factory, now=NOW + timedelta(hours=3))
    assert again.enqueued == 0 and again.matched == 0  # nothing changed: nothing to check
    cold = Sweeper().run(factory, now=NOW + timedelta(hours=3))  # a restarted process
    assert cold.enqueued == 0
    count = db.scalar(select(func.count()).select_from(Alert).where(Alert.advisory_id == later.id))
    assert count == 2


def test_only_one_process_holds_the_sweep_lease(db):
    ttl = timedelta(minutes=3)
    assert lease.acquire(db, name="geomatch-sweep", now=NOW, ttl=ttl, holder="a")
    assert not lease.acquire(db, name="geomatch-sweep", now=NOW, ttl=ttl, holder="b")
    assert lease.acquire(
        db, name="geomatch-sweep", now=NOW + timedelta(minutes=1), ttl=ttl, holder="a"
    )
    assert not lease.acquire(
        db, name="geomatch-sweep", now=NOW + timedelta(minutes=2), ttl=ttl, holder="b"
    )
    # a crashed holder's lease lapses
    assert lease.acquire(
        db, name="geomatch-sweep", now=NOW + timedelta(minutes=5), ttl=ttl, holder="b"
    )


def test_ledger_fast_path_and_its_duplicate_fallback(db):
    from service.ledger.enqueue import insert_alerts

    person = citizen(db, lon=1.0, lat=1.0, channels=("sms", "email"))
    record = advisory(db, area={"countries": ["XX"]})
    rows = [(record.id, 1, person.id, "sms")]
    assert insert_alerts(db.connection(), rows=list(rows), now=NOW) == 1
    # Again, now with one duplicate among new rows: only the new one lands.
    assert (
        insert_alerts(db.connection(), rows=[*rows, (record.id, 1, person.id, "email")], now=NOW)
        == 1
    )
    assert len(_alerts(db, advisory_id=record.id)) == 2


def test_sweeper_rereads_only_changed_citizens_and_misses_none(db):
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    area = {"circles": [{"lat": -33.9, "lon": 18.4, "radius_km": 30}]}
    record = advisory(db, area=area)
    bystander = citizen(db, lon=18.41, lat=-33.91)
    bystander.updated_at = NOW - timedelta(hours=1)  # registered well before the first sweep
    db.flush()
    sweeper = Sweeper()
    assert sweeper.run(factory, now=NOW).enqueued == 1
    assert bystander.id in alerted(db, record)
    newcomer = citizen(db, lon=18.45, lat=-33.92)  # arrives after the first sweep
    mover = citizen(db, lon=0.0, lat=0.0)
    sweeper.run(factory, now=NOW + timedelta(minutes=1))
    assert newcomer.id in alerted(db, record) and mover.id not in alerted(db, record)
    mover.places[0].lon, mover.places[0].lat = 18.4, -33.9
    mover.updated_at = NOW + timedelta(minutes=2)
    db.flush()
    second = sweeper.run(factory, now=NOW + timedelta(minutes=2))
    assert second.enqueued == 1 and mover.id in alerted(db, record)
    # Only the changed citizens were matched again (the newcomer and the mover, within the
    # look-back), not the bystander, whom the first sweep read.
    assert second.matched == 2


def test_a_sweep_in_shards_of_citizens_enqueues_what_one_shard_does(db):
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    area = {"circles": [{"lat": 48.85, "lon": 2.35, "radius_km": 40}]}
    people = [
        citizen(db, lon=2.35 + i / 100, lat=48.85, channels=("sms", "email")) for i in range(7)
    ]
    far = citizen(db, lon=10.0, lat=10.0)
    records = [advisory(db, area=area) for _ in range(_MANY)]  # past PostGIS's few
    first = Sweeper(shard_citizens=2).run(factory, now=NOW)
    assert first.enqueued == 2 * len(people) * len(records)
    assert all(alerted(db, r) == {p.id for p in people} for r in records)
    assert far.id not in alerted(db, records[0])
    # A restarted sweeper, in shards of another size: the ledger already holds everything.
    assert Sweeper(shard_citizens=3).run(factory, now=NOW).enqueued == 0


def test_a_sweep_longer_than_its_lease_keeps_it_by_committing_shard_by_shard(db, monkeypatch):
    """Each shard is a transaction of the lease-fenced factory, and each commit renews the
    lease: a first sweep of a registry too large for one lease runs to its end, and no other
    process can take the lease meanwhile (one transaction would have lost it, and its work)."""
    # A shard's own work must fit in the lease with room to spare on a loaded CI machine (a
    # 1 s lease taken before the data was built once ran out before the first commit).
    ttl = timedelta(seconds=2)
    area = {"circles": [{"lat": 48.85, "lon": 2.35, "radius_km": 40}]}
    people = [citizen(db, lon=2.35 + i / 100, lat=48.85) for i in range(7)]
    records = [advisory(db, area=area) for _ in range(_MANY)]
    plain = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    fenced = fenced_by_lease(plain, name="geomatch-sweep", ttl=ttl)
    taken_by_other = []
    read_shard = geomatch_service.load_reachable

    def slow_shard(*args, **kwargs):
        time.sleep(0.8)  # four shards: 3.2 s in all, past the 2 s lease
        taken_by_other.append(
            lease.acquire(db, name="geomatch-sweep", now=utcnow(), ttl=ttl, holder="other")
        )
        return read_shard(*args, **kwargs)

    monkeypatch.setattr(geomatch_service, "load_reachable", slow_shard)
    assert lease.acquire(db, name="geomatch-sweep", now=utcnow(), ttl=ttl)
    result = Sweeper(shard_citizens=2).run(fenced, now=NOW)
    assert result.enqueued == len(people) * len(records)
    assert taken_by_other == [False] * 4
    assert lease.still_held(db, name="geomatch-sweep")


def test_the_live_advisory_list_follows_every_change_between_registrations(db):
    area = {"circles": [{"lat": 10.0, "lon": 10.0, "radius_km": 50}]}
    first = advisory(db, area=area)
    second = advisory(db, area=area, expires=NOW + timedelta(minutes=30))

    def newcomer_is_told_by() -> set[int]:
        person = citizen(db, lon=10.0, lat=10.0)
        match_citizen(db, citizen_id=person.id, now=NOW)
        rows = db.scalars(select(Alert.advisory_id).where(Alert.citizen_id == person.id))
        return set(rows)

    assert newcomer_is_told_by() == {first.id, second.id}
    first.status, first.updated_at = "cancelled", NOW  # cancelled
    db.flush()
    assert newcomer_is_told_by() == {second.id}
    third = advisory(db, area=area)  # a new one, the count unchanged (one out, one in)
    first.status = "active"
    second.status = "expired"
    db.flush()
    assert newcomer_is_told_by() == {first.id, third.id}
    second.status, second.revision = "active", 2  # revised
    db.flush()
    assert newcomer_is_told_by() == {first.id, second.id, third.id}
    later = NOW + timedelta(hours=1)  # time alone: the second has expired by then
    person = citizen(db, lon=10.0, lat=10.0)
    match_citizen(db, citizen_id=person.id, now=later)
    told = set(db.scalars(select(Alert.advisory_id).where(Alert.citizen_id == person.id)))
    assert told == {first.id, third.id}


def test_a_new_advisory_reads_places_first_and_alerts_only_active_citizens(db):
    inside = citizen(db, lon=10.0, lat=10.0, channels=("sms", "email"))
    gone = citizen(db, lon=10.01, lat=10.01)
    gone.status = "erased"
    outside = citizen(db, lon=12.0, lat=12.0)
    db.flush()
    record = advisory(db, area={"circles": [{"lat": 10.0, "lon": 10.0, "radius_km": 50}]})
    result = match_advisories(db, advisories=[record], now=NOW)
    rows = db.execute(select(Alert.citizen_id, Alert.channel).where(Alert.advisory_id == record.id))
    assert sorted(rows) == [(inside.id, "email"), (inside.id, "sms")]
    assert result.enqueued == 2
    assert outside.id not in alerted(db, record)
