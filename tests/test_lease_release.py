"""A clean stop hands its job leases back (service/scheduler.py stop_scheduler): found by a
newcomer, whose `make run` restarted after Ctrl-C ran no sweep, expiry or duty notice for three
minutes, the old process's leases still counting down."""

from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from service import lease
from service.db import utcnow
from service.lease import SchedulerLease
from service.scheduler import stop_scheduler


def test_a_clean_stop_hands_back_its_own_leases_and_no_one_elses(db):
    factory = sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    now, ttl = utcnow(), timedelta(minutes=3)
    assert lease.acquire(db, name="purge-unverified", now=now, ttl=ttl)
    assert lease.acquire(db, name="geomatch-sweep", now=now, ttl=ttl, holder="another:1:x")
    assert not lease.acquire(db, name="purge-unverified", now=now, ttl=ttl, holder="next:2:y")
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    stop_scheduler(scheduler, factory)
    assert not scheduler.running
    held = db.execute(select(SchedulerLease.name, SchedulerLease.holder)).all()
    assert held == [("geomatch-sweep", "another:1:x")]
    # The next process takes the job at once.
    assert lease.acquire(db, name="purge-unverified", now=now, ttl=ttl, holder="next:2:y")
