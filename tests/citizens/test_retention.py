from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from service.citizens.models import CitizenPlace
from service.citizens.retention import purge_ended_stays
from service.config import Settings
from service.db import make_session_factory
from service.scheduler import Job, build_scheduler, jobs, run_job
from tests.builders import register, stay
from tests.geomatch.builders import citizen


def test_ended_stays_are_purged_after_retention(client, db):
    citizen_id, auth, _ = register(client, stays=[stay(1, 2), stay(40, 2)])
    today = date.today()
    # Ninety days later the first stay ended 87 days ago, the second 48 days ago.
    later = datetime.combine(today + timedelta(days=90), time(12), tzinfo=UTC)
    purged = purge_ended_stays(db, now=later, retention_days=60)
    assert purged == 1
    db.expire_all()  # the request session's view of the places, as a new request would see it
    remaining = client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()["stays"]
    assert [s["from"] for s in remaining] == [(today + timedelta(days=40)).isoformat()]
    assert purge_ended_stays(db, now=later, retention_days=60) == 0
    current = db.scalars(select(CitizenPlace).where(CitizenPlace.kind == "current")).all()
    assert current  # current locations are never purged


def test_a_stay_still_on_somewhere_is_not_purged(db):
    """With no retention at all, at 03:00 UTC a stay whose last day was yesterday in UTC is
    kept: it is still that day in Los Angeles, and matching still reaches it."""
    yesterday = date.today() - timedelta(days=1)
    ended = [
        (None, None, "US", yesterday - timedelta(days=3), yesterday - timedelta(days=d))
        for d in (0, 1)
    ]
    citizen(db, country="KR", stays=ended)
    at_three = datetime.combine(date.today(), time(3), tzinfo=UTC)
    assert purge_ended_stays(db, now=at_three, retention_days=0) == 1
    left = db.scalars(select(CitizenPlace.ends_on).where(CitizenPlace.kind == "stay")).all()
    assert left == [yesterday]


def test_scheduler_has_the_purge_job_and_a_failing_run_is_contained(settings: Settings, engine):
    scheduler = build_scheduler(settings, make_session_factory(engine))
    assert {job.id for job in scheduler.get_jobs()} == {
        "expire-advisories",
        "checkin-escalate",
        "forget-inbound-sms",
        "purge-ended-stays",
        "forget-ended-ledgers",
        "purge-unverified",
        "geomatch-sweep",
    }
    job = jobs(settings)[0]

    class Broken:
        def begin(self):
            raise RuntimeError("database gone")

    run_job(job, Broken(), settings)  # logged and counted, not raised


def test_a_periodic_job_runs_in_one_process_only(settings: Settings, db):
    """Every worker's scheduler fires every job; the job's lease lets one of them run it."""
    runs: list[str] = []
    job = Job("count-runs", 60, lambda session, _settings: runs.append("ran"))
    factory = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    run_job(job, factory, settings, holder="worker-1")
    run_job(job, factory, settings, holder="worker-2")  # not the leader: skipped
    run_job(job, factory, settings, holder="worker-1")
    assert runs == ["ran", "ran"]
