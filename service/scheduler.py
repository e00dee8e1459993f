"""The scheduled jobs. Each job body is a domain service function run in its own transaction.

APScheduler 3 does not coordinate processes (every worker runs every job): each periodic job
runs only in the process holding its lease row, and would be harmless twice anyway. The
dispatch job runs in every process: its claims are exclusive, so workers share the queue."""

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from service import lease
from service.advisories.feeds.config import Feed
from service.advisories.feeds.poll import poll_feed
from service.advisories.service import expire_due
from service.checkin import duty
from service.checkin.answers import forget_old_inbound
from service.checkin.escalation import escalate
from service.citizens.retention import purge_ended_stays
from service.citizens.service import purge_unverified
from service.config import Settings
from service.db import utcnow
from service.dispatch.dispatcher import Dispatcher
from service.geomatch.service import Sweeper
from service.metrics import JOB_RUNS

log = logging.getLogger("anjeon.scheduler")


@dataclass(frozen=True)
class Job:
    id: str
    every_s: int
    body: Callable[[Session, Settings], object]


def _purge_stays(session: Session, settings: Settings) -> int:
    return purge_ended_stays(
        session, today=utcnow().date(), retention_days=settings.stay_retention_days
    )


def _expire_advisories(session: Session, settings: Settings) -> int:
    return expire_due(session, now=utcnow())


def _purge_unverified(session: Session, settings: Settings) -> int:
    return purge_unverified(session, now=utcnow(), ttl_h=settings.unverified_ttl_h)


def _escalate_checkins(session: Session, settings: Settings) -> int:
    return escalate(
        session,
        after=timedelta(minutes=settings.checkin_escalate_after_m),
        rounds=settings.checkin_rounds,
        now=utcnow(),
    )


def _forget_inbound(session: Session, settings: Settings) -> int:
    return forget_old_inbound(session, now=utcnow())


def jobs(settings: Settings) -> list[Job]:
    return [
        Job("expire-advisories", 60, _expire_advisories),
        Job("checkin-escalate", 60, _escalate_checkins),
        Job("forget-inbound-sms", 6 * 3600, _forget_inbound),
        Job("purge-ended-stays", 6 * 3600, _purge_stays),
        Job("purge-unverified", 3600, _purge_unverified),
    ]


class LeaseLost(Exception):
    """The job's lease went to another process while the job ran: its work is rolled back."""


def run_job(
    job: Job, factory: sessionmaker[Session], settings: Settings, *, holder: str = lease.PROCESS_ID
) -> None:
    """One run in one transaction, in the one process holding the job's lease; a failure is
    logged and counted, and the next run tries again. The lease is taken in a transaction of
    its own (a run never holds the lease row locked, so a paused holder cannot block the next
    one), and checked again before the run commits: a run whose lease was taken over meanwhile
    is rolled back, so two holders never both commit a run."""
    ttl = timedelta(seconds=job.every_s * 3)
    try:
        with factory.begin() as session:
            if not lease.acquire(session, name=job.id, now=utcnow(), ttl=ttl, holder=holder):
                JOB_RUNS.labels(job.id, "not-leader").inc()
                return
        with factory.begin() as session:
            lease.fence(session, ttl=ttl)
            result = job.body(session, settings)
            if not lease.still_held(session, name=job.id, holder=holder):
                raise LeaseLost(job.id)
    except LeaseLost:
        JOB_RUNS.labels(job.id, "fenced").inc()
        log.warning("job rolled back: its lease went to another process", extra={"job": job.id})
        return
    except Exception:
        JOB_RUNS.labels(job.id, "error").inc()
        log.exception("job failed", extra={"job": job.id})
        return
    JOB_RUNS.labels(job.id, "ok").inc()
    log.info("job done", extra={"job": job.id, "result": result})


def run_feed_poll(feed: Feed, factory: sessionmaker[Session], settings: Settings) -> None:
    try:
        with factory.begin() as session:
            ttl = timedelta(seconds=feed.interval_s * 3)
            if not lease.acquire(session, name=f"feed:{feed.name}", now=utcnow(), ttl=ttl):
                JOB_RUNS.labels(f"feed:{feed.name}", "not-leader").inc()
                return
        outcome = poll_feed(
            factory,
            feed,
            now=utcnow(),
            timeout_s=settings.feed_timeout_s,
            max_bytes=settings.feed_max_bytes,
            max_vertices=settings.max_area_vertices,
            approval=settings.approval_policy(feed.approval),  # type: ignore[arg-type]
        )
    except Exception:
        JOB_RUNS.labels(f"feed:{feed.name}", "error").inc()
        log.exception("feed poll crashed", extra={"feed": feed.name})
        return
    JOB_RUNS.labels(f"feed:{feed.name}", outcome).inc()


def run_sweep(sweeper: Sweeper, factory: sessionmaker[Session], settings: Settings) -> None:
    """The geomatch sweep, in the one process that holds the lease."""
    now = utcnow()
    ttl = timedelta(seconds=settings.sweep_interval_s * 3)
    try:
        with factory.begin() as session:
            leader = lease.acquire(session, name="geomatch-sweep", now=now, ttl=ttl)
        if not leader:
            JOB_RUNS.labels("geomatch-sweep", "not-leader").inc()
            return
        result = sweeper.run(factory, now=now)
    except Exception:
        JOB_RUNS.labels("geomatch-sweep", "error").inc()
        log.exception("sweep failed")
        return
    JOB_RUNS.labels("geomatch-sweep", "ok").inc()
    log.info(
        "sweep done",
        extra={
            "matched": result.matched,
            "enqueued": result.enqueued,
            "advisories": result.advisories,
        },
    )


def run_duty_notices(
    dispatcher: Dispatcher, factory: sessionmaker[Session], settings: Settings
) -> None:
    """Help answers whose duty notice did not go when recorded (a crash, a relay down)."""
    now = utcnow()
    try:
        with factory.begin() as session:
            if not lease.acquire(session, name="duty-notices", now=now, ttl=timedelta(minutes=3)):
                JOB_RUNS.labels("duty-notices", "not-leader").inc()
                return
            waiting = duty.waiting(session, answered_before=now - timedelta(minutes=1))
        told = duty.tell_duty(
            factory,
            vault=dispatcher.vault,
            notifiers=dispatcher.notifiers,
            settings=settings,
            checkin_ids=waiting,
            now=now,
        )
    except Exception:
        JOB_RUNS.labels("duty-notices", "error").inc()
        log.exception("duty notices failed")
        return
    JOB_RUNS.labels("duty-notices", "ok").inc()
    if waiting:
        log.warning("duty notices sent late", extra={"waiting": len(waiting), "told": told})


def run_dispatch(dispatcher: Dispatcher) -> None:
    """Drain the alert ledger; runs in every process (claims are exclusive)."""
    try:
        tally = dispatcher.drain()
    except Exception:
        JOB_RUNS.labels("dispatch", "error").inc()
        log.exception("dispatch failed")
        return
    JOB_RUNS.labels("dispatch", "ok").inc()
    if tally.claimed:
        log.info(
            "dispatch done",
            extra={"claimed": tally.claimed, "by_status": tally.by_status},
        )


def wake_dispatch(scheduler: BackgroundScheduler, dispatcher: Dispatcher) -> None:
    """Alerts were committed: run the dispatch job now (or once more, if it is running)."""
    dispatcher.wake()
    with contextlib.suppress(JobLookupError):  # shutting down
        scheduler.modify_job("dispatch", next_run_time=utcnow())


def build_scheduler(
    settings: Settings,
    factory: sessionmaker[Session],
    feeds: list[Feed] | None = None,
    *,
    dispatcher: Dispatcher | None = None,
) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")
    if dispatcher is not None:
        scheduler.add_job(
            run_dispatch,
            "interval",
            seconds=settings.dispatch_interval_s,
            args=(dispatcher,),
            id="dispatch",
            name="dispatch",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=60,
            next_run_time=utcnow(),
        )
        scheduler.add_job(
            run_duty_notices,
            "interval",
            seconds=60,
            args=(dispatcher, factory, settings),
            id="duty-notices",
            name="duty-notices",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=60,
        )
    scheduler.add_job(
        run_sweep,
        "interval",
        seconds=settings.sweep_interval_s,
        args=(Sweeper(), factory, settings),
        id="geomatch-sweep",
        name="geomatch-sweep",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=settings.sweep_interval_s,
        next_run_time=utcnow(),
    )
    for feed in feeds or []:
        if feed.enabled:
            scheduler.add_job(
                run_feed_poll,
                "interval",
                seconds=feed.interval_s,
                args=(feed, factory, settings),
                id=f"feed:{feed.name}",
                name=f"feed:{feed.name}",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=feed.interval_s,
                next_run_time=utcnow(),
            )
    for job in jobs(settings):
        scheduler.add_job(
            run_job,
            "interval",
            seconds=job.every_s,
            args=(job, factory, settings),
            id=job.id,
            name=job.id,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=300,
            next_run_time=utcnow(),
        )
    return scheduler
